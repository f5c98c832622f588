#ifndef CLUED_SERVICE_NOTE_H
#define CLUED_SERVICE_NOTE_H

/* ClueService's notes on clues: AddNote and ListNotes (DESIGN.md §2 "Notes"). */

#include "rpc/rpc.h"

/** The AddNote handler (req is a Clue__V1__AddNoteRequest). */
void clue_add_note(rpc_call_t *call, const ProtobufCMessage *req);

/** The ListNotes handler (req is a Clue__V1__ListNotesRequest). */
void clue_list_notes(rpc_call_t *call, const ProtobufCMessage *req);

#endif
