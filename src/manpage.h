/*
 * manpage.h - brisk(1) in roff, generated from the settings table of
 * config.c (the one `brisk --help` prints), so the two cannot drift.
 * `brisk help-man` prints it; `make man` writes $(BUILD)/brisk.1.
 */
#ifndef BRISK_MANPAGE_H
#define BRISK_MANPAGE_H

#include <stdio.h>

/* Write the whole man page (section 1) for version `version` to out. */
void manpage_write(FILE *out, const char *version);

#endif
