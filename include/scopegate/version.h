#ifndef SCOPEGATE_VERSION_H
#define SCOPEGATE_VERSION_H

/* Set by meson from project(version:). */
const char *sg_version(void);

#endif
