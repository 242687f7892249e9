/* Wake-up primitives: a shared futex word for workers, eventfds for clients. */
#ifndef FASTWORKER_WAKE_H
#define FASTWORKER_WAKE_H

#include <stdint.h>

/* Sleep while *word == expected, at most timeout_ns (< 0: no limit).
 * Returns 0 when woken or the value differed, ETIMEDOUT, or EINTR. */
int fw_futex_wait(uint32_t *word, uint32_t expected, int64_t timeout_ns);

/* Wake at most n sleepers of word; returns how many were woken. */
int fw_futex_wake(uint32_t *word, int n);

/* Add one to an eventfd; EAGAIN (counter saturated) is treated as delivered. */
int fw_eventfd_signal(int fd);

uint64_t fw_realtime_ns(void);
uint64_t fw_monotonic_ns(void);

#endif
