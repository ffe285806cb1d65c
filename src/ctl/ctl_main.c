/*
 * Copyright (C) nginx-matrix-join authors.
 * matrix-join-ctl: the operator's tool. Links the same core as the module,
 * so the two can never disagree about an event ID or a signature.
 */

#include <stdio.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>
#include <sodium.h>

#include "ctl.h"


static void
usage(FILE *f)
{
    fprintf(f,
        "usage: matrix-join-ctl COMMAND [ARGS]\n"
        "\n"
        "commands:\n"
        "  keygen SERVER_NAME   print a new Synapse-format signing key line\n"
        "                       (\"ed25519 <version> <seed>\") on stdout\n"
        "  load --redis ADDRESS [--prefix P] SNAPSHOT.json\n"
        "                       check a room snapshot and load it into Redis\n"
        "  show --redis ADDRESS [--prefix P] ROOM_ID\n"
        "                       the loaded snapshot of a room\n"
        "  rooms --redis ADDRESS [--prefix P]\n"
        "                       one line per loaded room\n"
        "  forward --redis ADDRESS --upstream URL [--prefix P] [--once]\n"
        "          [--concurrency N] [--claim-idle MS] [--max-attempts N]\n"
        "          [--timeout MS] [--consumer NAME]\n"
        "                       deliver the joins accepted at the edge (the\n"
        "                       outbox) to the homeserver, in order per room\n"
        "  outbox --redis ADDRESS [--prefix P]\n"
        "                       what the outbox holds: one line per room,\n"
        "                       then the total\n"
        "  sync --redis ADDRESS --homeserver URL --server-name NAME\n"
        "       --signing-key FILE [--prefix P] [--every DURATION]\n"
        "       [--user @u:NAME]... [--confirm-passes N] [--timeout MS]\n"
        "       [--appservice-listen HOST:PORT --registration FILE]\n"
        "       ROOM_ID_OR_ALIAS...\n"
        "                       pull the rooms' snapshots from the\n"
        "                       homeserver over federation, check every\n"
        "                       event and load them; once, or every\n"
        "                       DURATION, with pushed changes\n"
        "                       (ADDRESS: host:port or unix:/path; also\n"
        "                       --password PW or MXJ_REDIS_PASSWORD, --db N)\n"
        "  version              print the version and the library versions\n"
        "  help                 this text\n");
}


int
main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return MXJ_EXIT_USAGE;
    }

    if (strcmp(argv[1], "keygen") == 0) {
        return mxj_cmd_keygen(argc - 1, argv + 1);
    }

    if (strcmp(argv[1], "load") == 0) {
        return mxj_cmd_load(argc - 1, argv + 1);
    }

    if (strcmp(argv[1], "show") == 0) {
        return mxj_cmd_show(argc - 1, argv + 1);
    }

    if (strcmp(argv[1], "rooms") == 0) {
        return mxj_cmd_rooms(argc - 1, argv + 1);
    }

    if (strcmp(argv[1], "forward") == 0) {
        return mxj_cmd_forward(argc - 1, argv + 1);
    }

    if (strcmp(argv[1], "outbox") == 0) {
        return mxj_cmd_outbox(argc - 1, argv + 1);
    }

    if (strcmp(argv[1], "sync") == 0) {
        return mxj_cmd_sync(argc - 1, argv + 1);
    }

    if (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0)
    {
        printf("matrix-join-ctl %s (jansson %s, libsodium %s, libcurl %s)\n",
               MXJ_VERSION, jansson_version_str(), sodium_version_string(),
               curl_version_info(CURLVERSION_NOW)->version);
        return MXJ_EXIT_OK;
    }

    if (strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0
        || strcmp(argv[1], "-h") == 0)
    {
        usage(stdout);
        return MXJ_EXIT_OK;
    }

    fprintf(stderr, "matrix-join-ctl: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);

    return MXJ_EXIT_USAGE;
}
