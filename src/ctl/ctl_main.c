/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl: the operator's tool. Links the same core as the module,
 * so the two can never disagree about an event ID or a signature.
 *
 * The help texts live here and only here: "CMD --help" prints one of them,
 * "--help" all of them, and the man page is generated from "--help"
 * (help2man, t/Makefile).
 */

#include <stdio.h>
#include <string.h>

#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <microhttpd.h>
#include <sodium.h>
#include <yaml.h>

#include "ctl.h"


typedef struct {
    const char  *name;
    int        (*run)(int argc, char **argv);
    const char  *summary;
    const char  *usage;
} mxj_command_t;


#define MXJ_REDIS_USAGE                                                       \
    "  --redis ADDRESS     Redis: HOST:PORT or unix:/PATH; Sentinel:\n"       \
    "                      'sentinel:NAME HOST:PORT,...'; Redis Cluster:\n"   \
    "                      'cluster:HOST:PORT,HOST:PORT,...'\n"              \
    "  --prefix P          the key prefix, as matrix_redis_prefix (default\n" \
    "                      \"mxj:\"; no braces, spaces or control\n"          \
    "                      characters)\n"                                    \
    "  --password PW       AUTH password (or MXJ_REDIS_PASSWORD)\n"          \
    "  --db N              SELECT N first (as matrix_redis_db, default 0)\n"


#define MXJ_METRICS_USAGE                                                     \
    "  --metrics HOST:PORT\n"                                                \
    "                      serve GET /metrics there (the Prometheus text\n" \
    "                      format), from a thread of its own\n"


static const mxj_command_t  mxj_commands[] = {

    { "keygen", mxj_cmd_keygen,
      "print a new Synapse-format signing key",
      "usage: matrix-join-ctl keygen SERVER_NAME\n"
      "Print a new Synapse-format signing key line (\"ed25519 <version>\n"
      "<seed>\") on stdout and its public key on stderr.\n" },

    { "load", mxj_cmd_load,
      "check a room snapshot and load it into Redis",
      "usage: matrix-join-ctl load --redis ADDRESS [--prefix P]\n"
      "       [--password PW] [--db N] SNAPSHOT.json\n"
      "Check a room snapshot (every event's hash, signatures and auth\n"
      "chain) and load it into Redis in one transaction.\n"
      MXJ_REDIS_USAGE },

    { "show", mxj_cmd_show,
      "the loaded snapshot of a room",
      "usage: matrix-join-ctl show --redis ADDRESS [--prefix P]\n"
      "       [--password PW] [--db N] ROOM_ID\n"
      "Print the loaded snapshot of a room (\"!opaque:server\").\n"
      MXJ_REDIS_USAGE },

    { "rooms", mxj_cmd_rooms,
      "one line per loaded room",
      "usage: matrix-join-ctl rooms --redis ADDRESS [--prefix P]\n"
      "       [--password PW] [--db N]\n"
      "Print one line per loaded room.\n"
      MXJ_REDIS_USAGE },

    { "outbox", mxj_cmd_outbox,
      "what the outbox holds",
      "usage: matrix-join-ctl outbox --redis ADDRESS [--prefix P]\n"
      "       [--password PW] [--db N]\n"
      "Print what the outbox holds: one line per room, then the total.\n"
      MXJ_REDIS_USAGE },

    { "forward", mxj_cmd_forward,
      "deliver the joins accepted at the edge to the homeserver",
      "usage: matrix-join-ctl forward --redis ADDRESS --upstream URL\n"
      "       [--prefix P] [--once] [--concurrency N] [--claim-idle MS]\n"
      "       [--max-attempts N] [--timeout MS] [--consumer NAME]\n"
      "       [--metrics HOST:PORT] [--password PW] [--db N]\n"
      "Deliver the joins accepted at the edge (the outbox) to the\n"
      "homeserver, in order per room.\n"
      "  --upstream URL      the homeserver, http://HOST:PORT[/PATH]\n"
      "  --once              deliver what is there, then exit; with Redis\n"
      "                      unreachable, exit 1 after 5 tries\n"
      "  --concurrency N     rooms delivered at the same time (1 to 256,\n"
      "                      default 4)\n"
      "  --claim-idle MS     take over entries another consumer left\n"
      "                      pending this long (default 60000)\n"
      "  --max-attempts N    tries before an entry is a dead letter\n"
      "                      (default 10)\n"
      "  --timeout MS        per HTTP request (default 30000)\n"
      "  --consumer NAME     the consumer name (default HOSTNAME-PID)\n"
      MXJ_METRICS_USAGE
      MXJ_REDIS_USAGE },

    { "sync", mxj_cmd_sync,
      "pull rooms' snapshots from the homeserver and load them",
      "usage: matrix-join-ctl sync --redis ADDRESS --homeserver URL\n"
      "       --server-name NAME --signing-key FILE [--prefix P]\n"
      "       [--every DURATION] [--user @u:NAME]... [--confirm-passes N]\n"
      "       [--timeout MS]\n"
      "       [--appservice-listen HOST:PORT --registration FILE]\n"
      "       [--metrics HOST:PORT] [--password PW] [--db N]\n"
      "       ROOM_ID_OR_ALIAS...\n"
      "Pull the rooms' snapshots from the homeserver over federation,\n"
      "check every event and load them; once, or every DURATION (30s,\n"
      "5m, 1h), with the changes an application service listener is\n"
      "pushed.\n"
      MXJ_METRICS_USAGE
      MXJ_REDIS_USAGE },

    { "version", NULL,
      "the version and the library versions",
      "usage: matrix-join-ctl version\n"
      "Print the version and the versions of the libraries linked.\n" },

    { "help", NULL,
      "this text, or a command's",
      "usage: matrix-join-ctl help [COMMAND]\n"
      "Print this text, or a command's.\n" },

    { NULL, NULL, NULL, NULL }
};


static void mxj_help_all(FILE *f);
static int mxj_wants_help(int argc, char **argv);
static int mxj_version(void);


static const mxj_command_t *
mxj_command(const char *name)
{
    const mxj_command_t  *c;

    for (c = mxj_commands; c->name; c++) {
        if (strcmp(c->name, name) == 0) {
            return c;
        }
    }

    return NULL;
}


void
mxj_usage(FILE *f, const char *cmd)
{
    const mxj_command_t  *c;

    c = mxj_command(cmd);

    if (c != NULL) {
        fputs(c->usage, f);
    }
}


int
main(int argc, char **argv)
{
    const mxj_command_t  *c;

    if (argc < 2) {
        mxj_help_all(stderr);
        return MXJ_EXIT_USAGE;
    }

    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        mxj_help_all(stdout);
        return MXJ_EXIT_OK;
    }

    if (strcmp(argv[1], "--version") == 0) {
        return mxj_version();
    }

    c = mxj_command(argv[1]);

    if (c == NULL) {
        fprintf(stderr, "matrix-join-ctl: unknown command \"%s\" "
                "(matrix-join-ctl --help lists them)\n", argv[1]);
        return MXJ_EXIT_USAGE;
    }

    /* "CMD -h" and "CMD --help" before any other effect, for every CMD */

    if (mxj_wants_help(argc - 1, argv + 1)) {
        fputs(c->usage, stdout);
        return MXJ_EXIT_OK;
    }

    if (c->run) {
        return c->run(argc - 1, argv + 1);
    }

    if (strcmp(c->name, "version") == 0) {
        if (argc > 2) {
            fputs(c->usage, stderr);
            return MXJ_EXIT_USAGE;
        }

        return mxj_version();
    }

    /* help [COMMAND] */

    if (argc == 2) {
        mxj_help_all(stdout);
        return MXJ_EXIT_OK;
    }

    c = (argc == 3) ? mxj_command(argv[2]) : NULL;

    if (c == NULL) {
        mxj_usage(stderr, "help");
        return MXJ_EXIT_USAGE;
    }

    fputs(c->usage, stdout);

    return MXJ_EXIT_OK;
}


/* Any "-h" or "--help" among the arguments before a "--". */

static int
mxj_wants_help(int argc, char **argv)
{
    int  i;

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            return 0;
        }

        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            return 1;
        }
    }

    return 0;
}


static void
mxj_help_all(FILE *f)
{
    const char           *p, *q;
    const mxj_command_t  *c;

    fprintf(f,
        "usage: matrix-join-ctl COMMAND [OPTIONS] [ARGS]\n"
        "       matrix-join-ctl COMMAND --help\n"
        "       matrix-join-ctl --help | --version\n"
        "\n"
        "The operator's tool of nginx-matrix-join: signing keys, room\n"
        "snapshots in Redis, the join outbox's forwarder, and the sync\n"
        "from the homeserver.\n"
        "\n"
        "Options take \"--name VALUE\" or \"--name=VALUE\"; \"-h\" or\n"
        "\"--help\" anywhere before \"--\" prints the command's help and\n"
        "does nothing else.\n"
        "\n"
        "Commands:\n");

    for (c = mxj_commands; c->name; c++) {
        fprintf(f, "  %-9s %s\n", c->name, c->summary);
    }

    /* indented under "NAME:": help2man makes each a subsection */

    for (c = mxj_commands; c->name; c++) {
        fprintf(f, "\n%s:\n", c->name);

        for (p = c->usage; *p; p = q) {
            q = strchr(p, '\n');
            q = q ? q + 1 : p + strlen(p);
            fprintf(f, "  %.*s", (int) (q - p), p);
        }
    }

    fprintf(f,
        "\n"
        "Exit status:\n"
        "  0  success\n"
        "  1  the operation failed (Redis unreachable or refusing, the\n"
        "     homeserver, a file, a snapshot that does not check, a port\n"
        "     taken)\n"
        "  2  usage error: unknown command or option, missing or invalid\n"
        "     value (a malformed address included)\n");
}


static int
mxj_version(void)
{
    printf("matrix-join-ctl %s\n"
           "hiredis %d.%d.%d\n"
           "libcurl %s\n"
           "libmicrohttpd %s\n"
           "libyaml %s\n"
           "jansson %s\n"
           "libsodium %s\n",
           MXJ_VERSION, HIREDIS_MAJOR, HIREDIS_MINOR, HIREDIS_PATCH,
           curl_version_info(CURLVERSION_NOW)->version, MHD_get_version(),
           yaml_get_version_string(), jansson_version_str(),
           sodium_version_string());

    if (fflush(stdout) != 0) {
        perror("matrix-join-ctl: stdout");
        return MXJ_EXIT_FAIL;
    }

    return MXJ_EXIT_OK;
}
