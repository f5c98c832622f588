#include "domain/audit_frontier.h"

#include <string.h>

void audit_frontier_start(audit_frontier_t *f, int64_t max_seq, int64_t xmin, int64_t xbound) {
  memset(f, 0, sizeof(*f));
  f->safe = max_seq;
  f->start_xbound = xbound;
  f->ready = xmin >= xbound;
}

static void checkpoint_push(audit_frontier_t *f, int64_t max_seq, int64_t xbound) {
  audit_checkpoint_t *last = f->ncp ? &f->cp[f->ncp - 1] : NULL;

  if (last && max_seq <= last->max_seq)
    return; /* an earlier checkpoint already covers these seqs, with a smaller bound */
  if (f->ncp == AUDIT_FRONTIER_CHECKPOINTS) {
    /* Merge into the last: its seqs then wait for a later bound, which is still sound. */
    last->max_seq = max_seq;
    last->xbound = xbound;
    return;
  }
  f->cp[f->ncp].max_seq = max_seq;
  f->cp[f->ncp].xbound = xbound;
  f->ncp++;
}

/* Drop the k oldest checkpoints. */
static void checkpoint_drop_first(audit_frontier_t *f, int k) {
  if (k <= 0)
    return;
  memmove(f->cp, f->cp + k, (size_t)(f->ncp - k) * sizeof(f->cp[0]));
  f->ncp -= k;
}

size_t audit_frontier_advance(audit_frontier_t *f, const int64_t *seqs, size_t n, int64_t xmin,
                              int64_t xbound) {
  size_t i;
  int k;

  /* This snapshot is a checkpoint too; if nothing was running when it was taken, its xmin
   * already reaches its bound and it resolves its own gaps, below. */
  if (n > 0 && xbound > 0)
    checkpoint_push(f, seqs[n - 1], xbound);
  for (k = 0; k < f->ncp && f->cp[k].xbound <= xmin; k++)
    if (f->cp[k].max_seq > f->resolved)
      f->resolved = f->cp[k].max_seq;
  checkpoint_drop_first(f, k);
  if (!f->ready) {
    if (xmin < f->start_xbound)
      return 0;
    f->ready = 1;
  }
  for (i = 0; i < n; i++) {
    /* The next seq, or one past a gap whose seqs are all below resolved (rolled back). */
    if (seqs[i] <= f->safe || (seqs[i] != f->safe + 1 && seqs[i] > f->resolved))
      break;
    f->safe = seqs[i];
  }
  for (k = 0; k < f->ncp && f->cp[k].max_seq <= f->safe; k++)
    ;
  checkpoint_drop_first(f, k);
  return i;
}
