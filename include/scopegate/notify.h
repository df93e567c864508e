/*
 * The service manager's readiness protocol (sd_notify), spoken without libsystemd: one
 * datagram of "KEY=VALUE" lines to the AF_UNIX socket named by $NOTIFY_SOCKET (a leading '@'
 * names the abstract namespace). Without $NOTIFY_SOCKET nothing is sent, so the daemon runs
 * the same by hand, under a test or under systemd with Type=notify. A failure to send is
 * logged and otherwise ignored: the daemon serves whether or not anyone listens.
 */
#ifndef SCOPEGATE_NOTIFY_H
#define SCOPEGATE_NOTIFY_H

#include "scopegate/rc.h"

/* Sends state (e.g. "READY=1\nSTATUS=serving"). SG_OK also when $NOTIFY_SOCKET is unset;
 * SG_ERR_CONFIG for a socket name that is not usable, SG_ERR_IO when sending failed. */
sg_rc sg_notify(const char *state);

/* printf into one datagram (at most 4 KiB; longer text is refused, not cut). */
sg_rc sg_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
