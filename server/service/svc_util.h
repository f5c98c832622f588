#ifndef CLUED_SERVICE_SVC_UTIL_H
#define CLUED_SERVICE_SVC_UTIL_H

/* What several service files share beside common.h: method-table entries, PostgreSQL array
 * literals and other query parameters, lists that travel as one joined column, database
 * names of enums, and the pages of list replies. Every function returning text allocates it
 * in the call's memory. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "rpc/rpc.h"

/**
 * An entry of a clue.v1 service's method table: a unary call to "/clue.v1.<service>/<name>"
 * handled by fn, whose request and response are the clue.v1 messages named in and out in
 * protobuf-c's lower-case form (create_unit_request, unit).
 */
#define SVC_CLUE_METHOD(service, name, fn, in, out)                                                \
  {                                                                                                \
    "/clue.v1." service "/" name, &clue__v1__##in##__descriptor, &clue__v1__##out##__descriptor,   \
        fn, 0, 0, 0, 0                                                                             \
  }

/** SVC_CLUE_METHOD() for a method whose database cost grows with the data (rpc_method_t.heavy). */
#define SVC_HEAVY_METHOD(service, name, fn, in, out)                                               \
  {                                                                                                \
    "/clue.v1." service "/" name, &clue__v1__##in##__descriptor, &clue__v1__##out##__descriptor,   \
        fn, 0, 0, 0, 1                                                                             \
  }

/** A PostgreSQL bigint[] literal of ids ("{1,2,3}"); NULL when out of memory. */
const char *svc_id_array(rpc_call_t *call, const int64_t *ids, size_t n);

/**
 * A PostgreSQL text[] literal of items without their leading and trailing white space
 * (validate_trim(): the text a length limit was checked on), quotes and backslashes
 * escaped ({"a","b"}); NULL when out of memory.
 */
const char *svc_text_array_trimmed(rpc_call_t *call, char *const *items, size_t n);

/**
 * Split, in place, a list that travelled as one column joined by U+001F (which validated
 * text never holds): *items, in the call's memory, points into joined. "" is no items (*n 0,
 * *items untouched). Returns 0 or -ENOMEM.
 */
int svc_split_list(rpc_call_t *call, char *joined, char ***items, size_t *n)
    __attribute__((warn_unused_result));

/** True if none of params[0..n) is NULL: every query parameter was made (no out of memory). */
bool svc_all_set(const char *const *params, int n);

/**
 * The index of s in names[1..n) (a table of database names by proto enum number, names[0]
 * unused); 0 (UNSPECIFIED) if s is NULL or not there.
 */
int svc_name_index(const char *const *names, size_t n, const char *s);

/**
 * The bytes of items a list reply holds at most, besides its first item, which it always
 * holds: half of the 4 MiB a gRPC client accepts by default, so that the items of a full
 * page, whatever their texts, and the rest of the reply arrive whole. A digit string, for
 * SQL text (ListNotes counts its notes' text against it in the query).
 */
#define SVC_PAGE_BYTES 2097152

/** A macro's value as a string literal, to write it into SQL ("LIMIT " SVC_STR(MAX)). */
#define SVC_STR_(x) #x
#define SVC_STR(x) SVC_STR_(x)

/**
 * True if item may join a reply page whose items so far take *bytes (0: none yet, and the
 * first item always joins), then counted in *bytes; false if the page ends before it.
 */
bool svc_page_fits(size_t *bytes, const ProtobufCMessage *item);

/**
 * A page token holding the id (or seq) of the last item of a page, in the call's memory, in
 * an opaque form with a check, so that a damaged or made-up token is refused; NULL when out
 * of memory.
 */
const char *svc_page_token(rpc_call_t *call, int64_t last_id);

/** The id a token of svc_page_token() holds, or 0 if s is not one. */
int64_t svc_page_after(const char *s);

/** svc_page_token() for one scope (a clue's history: its id): svc_page_after_of() with
 * another scope refuses the token as it refuses a damaged one. */
const char *svc_page_token_of(rpc_call_t *call, int64_t scope, int64_t last_id);
int64_t svc_page_after_of(const char *s, int64_t scope);

/**
 * svc_page_token_of() for a scope of nscope values (the caller, the filters): a token
 * svc_page_after_in() reads for a scope that differs in any value (another caller, another
 * filter) is refused as a damaged one is (0).
 */
const char *svc_page_token_in(rpc_call_t *call, const int64_t *scope, size_t nscope,
                              int64_t last_id);
int64_t svc_page_after_in(const char *s, const int64_t *scope, size_t nscope);

/** The most values the key of a svc_page_token_keys() token holds. */
#define SVC_PAGE_KEY_MAX 4

/**
 * svc_page_token_in() for a keyset on nkey columns (1 to SVC_PAGE_KEY_MAX: a time, say, then
 * the ids that order the rows sharing it), holding the last row's nkey values: in the call's
 * memory, in an opaque form with a check; NULL when out of memory. A token of one value is
 * svc_page_token_in()'s.
 */
const char *svc_page_token_keys(rpc_call_t *call, const int64_t *scope, size_t nscope,
                                const int64_t *key, size_t nkey);

/**
 * The nkey values a token of svc_page_token_keys() holds, into key (untouched on failure).
 * Returns 0, or -EINVAL if s is not such a token: damaged, made up, of another number of
 * values, or given for a scope that differs in any value (another caller, another filter).
 * The values are any the token holds; the caller checks what its keyset accepts.
 */
int svc_page_after_keys(const char *s, const int64_t *scope, size_t nscope, int64_t *key,
                        size_t nkey) __attribute__((warn_unused_result));

/**
 * A page token holding the text key of the last row of a page (a keyset on a text column,
 * such as a name), for the scope's nscope values (the caller, the filters), in the call's
 * memory, in an opaque form with a check, as svc_page_token_of(); NULL when out of memory or
 * key is empty.
 */
const char *svc_page_token_key(rpc_call_t *call, const int64_t *scope, size_t nscope,
                               const char *key);

/**
 * The key a token of svc_page_token_key() for the same scope holds, into *key (in the call's
 * memory; untouched on failure). Returns 0, -EINVAL if s is not such a token (damaged, made up,
 * or given for another scope; its key empty, or not UTF-8) or -ENOMEM.
 */
int svc_page_after_key(rpc_call_t *call, const char *s, const int64_t *scope, size_t nscope,
                       const char **key) __attribute__((warn_unused_result));

#endif
