/*
 * The vault's insides shared between gateway/vault.c and gateway/vault_webhook.c. Nothing
 * else includes this file: the module's surface is include/scopegate/vault.h.
 */
#ifndef SCOPEGATE_VAULT_INT_H
#define SCOPEGATE_VAULT_INT_H

#include "scopegate/rc.h"

/*
 * The webhook: a thread of its own POSTs queued JSON bodies to one URL, off the request path.
 * A message that does not get a 2xx answer is tried again after 1, 2, 4, 8 and 16 seconds,
 * then dropped (with a log line). At most SG_WEBHOOK_QUEUE messages wait; more are dropped at
 * once. A failing message never holds up the ones behind it: each waits for its own time.
 */
#define SG_WEBHOOK_QUEUE   1000
#define SG_WEBHOOK_RETRIES 5

typedef struct sg_webhook sg_webhook_t;

sg_rc sg_webhook_start(const char *url, long timeout_ms, sg_webhook_t **out);
/* Queues a copy of body; SG_ERR_TOO_BIG (and the message is dropped) when the queue is full. */
sg_rc sg_webhook_send(sg_webhook_t *w, const char *body);
/* Stops the thread: the message in flight finishes (bounded by the timeout), the rest are
 * dropped. NULL is fine. */
void sg_webhook_stop(sg_webhook_t *w);

#endif
