/*
 * Copyright (C) nginx-matrix-join authors.
 *
 * Redis Cluster's routing facts (mx_cluster.h).
 */

#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "mx_cluster.h"


/*
 * CRC16-CCITT as Redis Cluster uses it (XMODEM: polynomial 0x1021, initial
 * value 0, no reflection, no final xor), bit by bit: a key is hashed once
 * per command, and a table would be 512 bytes to save nanoseconds.
 */

static uint16_t
mx_cluster_crc16(const unsigned char *p, size_t len)
{
    int       bit;
    size_t    i;
    uint16_t  crc;

    crc = 0;

    for (i = 0; i < len; i++) {
        crc ^= (uint16_t) p[i] << 8;

        for (bit = 0; bit < 8; bit++) {
            crc = (crc & 0x8000) ? (uint16_t) ((crc << 1) ^ 0x1021)
                                 : (uint16_t) (crc << 1);
        }
    }

    return crc;
}


unsigned
mx_cluster_slot(const char *key, size_t len)
{
    size_t  open, close;

    /* the hash tag: between the first "{" and the first "}" after it,
     * when that is not empty */

    for (open = 0; open < len && key[open] != '{'; open++) {
        /* void */
    }

    if (open < len) {
        for (close = open + 1; close < len && key[close] != '}'; close++) {
            /* void */
        }

        if (close < len && close > open + 1) {
            key += open + 1;
            len = close - open - 1;
        }
    }

    return mx_cluster_crc16((const unsigned char *) key, len)
           & (MX_CLUSTER_SLOTS - 1);
}


static int
mx_cluster_is(const char *s, size_t len, const char *name)
{
    return strlen(name) == len && strncasecmp(s, name, len) == 0;
}


int
mx_cluster_key_index(int argc, const char **argv, const size_t *lens)
{
    int          i;
    long         n;
    size_t       len, k;
    const char  *cmd;

    static const char  *keyless[] = {
        "AUTH", "SELECT", "PING", "ECHO", "INFO", "ROLE", "CLUSTER",
        "SCRIPT", "MULTI", "EXEC", "DISCARD", "WAIT", "SCAN", "DBSIZE",
        "CONFIG", "CLIENT", "TIME", "ASKING", "READONLY", "READWRITE",
        "COMMAND", "FLUSHALL", "FLUSHDB", "SLOWLOG", "LASTSAVE", "SAVE",
        "BGSAVE", "BGREWRITEAOF", "DEBUG", "SENTINEL", "HELLO", "QUIT",
        "RESET", "FUNCTION", "LATENCY", "MONITOR", "SHUTDOWN", "SWAPDB",
        "WAITAOF", "UNWATCH"
    };

    if (argc < 1) {
        return -1;
    }

    cmd = argv[0];
    len = lens ? lens[0] : strlen(argv[0]);

    for (k = 0; k < sizeof(keyless) / sizeof(keyless[0]); k++) {
        if (mx_cluster_is(cmd, len, keyless[k])) {
            return -1;
        }
    }

    /* EVAL script numkeys key ... */

    if (mx_cluster_is(cmd, len, "EVAL") || mx_cluster_is(cmd, len, "EVALSHA")
        || mx_cluster_is(cmd, len, "EVAL_RO")
        || mx_cluster_is(cmd, len, "EVALSHA_RO")
        || mx_cluster_is(cmd, len, "FCALL"))
    {
        if (argc < 4) {
            return -1;
        }

        n = 0;

        for (k = 0; k < (lens ? lens[2] : strlen(argv[2])); k++) {
            if (argv[2][k] < '0' || argv[2][k] > '9' || n > 100000) {
                return -1;
            }

            n = n * 10 + (argv[2][k] - '0');
        }

        return n > 0 ? 3 : -1;
    }

    /* XREAD [...] STREAMS key ... id ... */

    if (mx_cluster_is(cmd, len, "XREAD")
        || mx_cluster_is(cmd, len, "XREADGROUP"))
    {
        for (i = 1; i + 1 < argc; i++) {
            if (mx_cluster_is(argv[i], lens ? lens[i] : strlen(argv[i]),
                              "STREAMS"))
            {
                return i + 1;
            }
        }

        return -1;
    }

    /* a subcommand, then the key */

    if (mx_cluster_is(cmd, len, "XINFO") || mx_cluster_is(cmd, len, "XGROUP")
        || mx_cluster_is(cmd, len, "OBJECT")
        || mx_cluster_is(cmd, len, "MEMORY"))
    {
        return argc > 2 ? 2 : -1;
    }

    return argc > 1 ? 1 : -1;
}


int
mx_cluster_retry_error(const char *err, size_t len)
{
    size_t        i, n;

    static const char  *words[] = { "MOVED ", "ASK ", "TRYAGAIN",
                                    "CLUSTERDOWN" };

    for (i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        n = strlen(words[i]);

        if (len >= n && memcmp(err, words[i], n) == 0) {
            return 1;
        }
    }

    return 0;
}


int
mx_cluster_redirect(const char *err, size_t len, unsigned *slot,
    mx_redis_host_t *node)
{
    int          kind;
    size_t       i;
    unsigned     s;
    const char  *p, *end;
    char         msg[128], buf[16];

    if (len > 6 && memcmp(err, "MOVED ", 6) == 0) {
        kind = MX_CLUSTER_MOVED;
        p = err + 6;

    } else if (len > 4 && memcmp(err, "ASK ", 4) == 0) {
        kind = MX_CLUSTER_ASK;
        p = err + 4;

    } else {
        return 0;
    }

    end = err + len;
    s = 0;

    for (i = 0; p < end && *p >= '0' && *p <= '9' && i < 6; i++, p++) {
        s = s * 10 + (unsigned) (*p - '0');
    }

    if (i == 0 || s >= MX_CLUSTER_SLOTS || p == end || *p != ' ') {
        return 0;
    }

    p++;

    if (p < end && *p == ':') {
        /* ":port": Redis left the host out, the node that answered */

        if ((size_t) (end - p) + 2 > sizeof(buf)) {
            return 0;
        }

        buf[0] = 'x';
        memcpy(buf + 1, p, (size_t) (end - p));

        if (mx_redis_host_parse(buf, (size_t) (end - p) + 1, node, msg,
                                sizeof(msg))
            != 0)
        {
            return 0;
        }

        node->host[0] = '\0';

    } else if (mx_redis_host_parse(p, (size_t) (end - p), node, msg,
                                   sizeof(msg))
               != 0 || node->port == 0)
    {
        return 0;
    }

    *slot = s;

    return kind;
}
