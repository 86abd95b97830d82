/*
** make bench: what a mod-sequence costs each message, read from the compiled structures.
** It includes imapmem.c (as test/unit.c does) to see struct message, and prints one line
** of JSON for test/bench.py:
**   message       sizeof(struct message), one element of a mailbox's msgs array
**   modseq_fields the bytes of the fields that exist for RFC 7162: modseq (the message's
**                 MODSEQ) and older/newer (its links in the mailbox's change list)
**   without       the other fields' bytes rounded up to the struct's alignment: the least
**                 struct message could be without them, so message - without is the most
**                 they cost, padding included
**   align         _Alignof(struct message)
*/
#include "../imapmem.c"   /* first: it sets _POSIX_C_SOURCE */
#include <stdalign.h>
#include <stdio.h>

int main(void) {
  const struct message *m = NULL;
  size_t fields = sizeof m->modseq + sizeof m->older + sizeof m->newer;
  size_t align = alignof(struct message);
  /* the other fields' bytes, padded as the compiler pads them */
  size_t rest = sizeof m->uid + sizeof m->flags + sizeof m->keywords + sizeof m->internaldate +
                sizeof m->data + sizeof m->tz;
  size_t without = (rest + align - 1) / align * align;
  printf("{\"message\": %zu, \"modseq_fields\": %zu, \"without\": %zu, \"align\": %zu}\n",
         sizeof(struct message), fields, without, align);
  return 0;
}
