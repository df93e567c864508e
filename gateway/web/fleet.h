/*
 * Several gateway instances on one PostgreSQL store (fleet.c): the change feed that carries
 * session ends between instances, the instance registry, and the store's reachability.
 * Only started when the store is shared; every function takes a NULL fleet (one instance).
 */
#ifndef SG_FLEET_H
#define SG_FLEET_H

#include "gateway.h"

typedef struct sg_fleet sg_fleet_t;

/* Starts following the feed and beating; public_url names the instance by host and port
 * when instance_id is not set. */
sg_rc sg_fleet_start(sg_gateway_t *gw, const char *public_url, sg_fleet_t **out);
void sg_fleet_stop(sg_fleet_t *f);
/* This instance's id in the registry ("" for none). */
const char *sg_fleet_id(const sg_fleet_t *f);
/* Seconds since the store stopped answering; 0 while it answers. */
long long sg_fleet_store_down_for(const sg_fleet_t *f);
/* Calls visit for each live instance (self: it is this one) under the list's lock; returns
 * how many there are. */
typedef void (*sg_fleet_visit_fn)(void *ctx, const sg_instance_rec_t *rec, int self);
size_t sg_fleet_instances(sg_fleet_t *f, sg_fleet_visit_fn visit, void *ctx);

#endif
