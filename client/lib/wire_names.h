#ifndef CLUE_LIB_WIRE_NAMES_H
#define CLUE_LIB_WIRE_NAMES_H

/*
 * The installed libclue (CMake's clue_dist) carries the gRPC wire helpers it shares with
 * clued (server/net/grpc_wire.c, grpc_status.c), whose names start with the server's grpc_
 * module prefix. In a library those names would be an application's too: a program (or
 * another of its libraries) with a grpc_status_name or grpc_decoder_feed of its own would
 * silently take the place of libclue's. So that build includes this header first in every
 * file (-include), giving them the clue__ prefix of libclue's internal names (mem.h); clued,
 * cluectl and the unit tests keep the plain names. tests/e2e/test_install.py checks that the
 * installed libraries define no other global names than clue_*, clue__* and the protobuf-c
 * code of the API. A new extern function in those files needs a line here.
 */

#define grpc_decoder_init clue__grpc_decoder_init
#define grpc_decoder_free clue__grpc_decoder_free
#define grpc_decoder_partial clue__grpc_decoder_partial
#define grpc_decoder_feed clue__grpc_decoder_feed
#define grpc_frame_prefix clue__grpc_frame_prefix
#define grpc_timeout_parse clue__grpc_timeout_parse
#define grpc_timeout_format clue__grpc_timeout_format
#define grpc_message_encode clue__grpc_message_encode
#define grpc_message_decode clue__grpc_message_decode
#define grpc_hex_digit clue__grpc_hex_digit
#define grpc_parse_uint clue__grpc_parse_uint
#define grpc_status_name clue__grpc_status_name
#define grpc_status_from_name clue__grpc_status_from_name

#endif
