/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl: one file per command, dispatched from ctl_main.c.
 */

#ifndef MXJ_CTL_H
#define MXJ_CTL_H

#include <stdio.h>

#define MXJ_VERSION  "0.1.0"

/* Exit codes: 0 ok, 1 the operation failed, 2 usage error. */
#define MXJ_EXIT_OK      0
#define MXJ_EXIT_FAIL    1
#define MXJ_EXIT_USAGE   2

int mxj_cmd_keygen(int argc, char **argv);
int mxj_cmd_load(int argc, char **argv);
int mxj_cmd_show(int argc, char **argv);
int mxj_cmd_rooms(int argc, char **argv);
int mxj_cmd_forward(int argc, char **argv);
int mxj_cmd_outbox(int argc, char **argv);
int mxj_cmd_sync(int argc, char **argv);

/* Prints command cmd's help text (ctl_main.c, the one source of them). */
void mxj_usage(FILE *f, const char *cmd);

#endif /* MXJ_CTL_H */
