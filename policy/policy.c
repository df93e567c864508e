/* The loaded policy as an object: its arena, its accessors, its end. */
#include "policy_int.h"

#include <stdalign.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK_SIZE 4096

struct sg_policy_block {
    struct sg_policy_block *next;
    size_t used;
    size_t cap;
    max_align_t data[];
};

void *sg_policy_alloc(sg_policy_t *p, size_t n)
{
    const size_t align = alignof(max_align_t);
    if (n > SIZE_MAX / 2)
        return NULL;
    n = n ? (n + align - 1) / align * align : align;
    struct sg_policy_block *b = p->arena;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > BLOCK_SIZE ? n : BLOCK_SIZE;
        b = calloc(1, sizeof(*b) + cap);
        if (!b)
            return NULL;
        b->cap = cap;
        b->next = p->arena;
        p->arena = b;
    }
    void *r = (unsigned char *)b->data + b->used;
    b->used += n;
    return r;
}

char *sg_policy_strdup(sg_policy_t *p, const char *s)
{
    size_t len = strlen(s);
    char *r = sg_policy_alloc(p, len + 1);
    if (r)
        memcpy(r, s, len + 1);
    return r;
}

void sg_policy_free(sg_policy_t *p)
{
    if (!p)
        return;
    struct sg_policy_block *b = p->arena;
    while (b) {
        struct sg_policy_block *next = b->next;
        free(b);
        b = next;
    }
    free(p);
}

const char *sg_policy_source(const sg_policy_t *p)
{
    return p->source;
}

const char *sg_policy_hash(const sg_policy_t *p)
{
    return p->hash;
}

const sg_policy_signin_t *sg_policy_signin(const sg_policy_t *p)
{
    return &p->signin;
}

const sg_policy_role_t *sg_policy_roles(const sg_policy_t *p, size_t *n)
{
    *n = p->nroles;
    return p->roles;
}

const sg_policy_role_t *sg_policy_role(const sg_policy_t *p, const char *name)
{
    for (size_t i = 0; i < p->nroles; i++)
        if (strcmp(p->roles[i].name, name) == 0)
            return &p->roles[i];
    return NULL;
}

const sg_policy_rule_t *sg_policy_rules(const sg_policy_t *p, size_t *n)
{
    *n = p->nrules;
    return p->rules;
}

const sg_policy_offline_t *sg_policy_offline_for_app(const sg_policy_t *p, const char *app)
{
    for (size_t i = 0; app && i < p->nroles; i++)
        if (p->roles[i].offline && p->roles[i].offline->app &&
            strcmp(p->roles[i].offline->app, app) == 0)
            return p->roles[i].offline;
    return NULL;
}
