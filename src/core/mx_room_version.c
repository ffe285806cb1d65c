/*
 * Copyright (C) nginx-matrix-join authors.
 */

#include <string.h>

#include "mx_room_version.h"


#define MX_DEPTH_MAX_V1  INT64_MAX                 /* 2^63 - 1 */
#define MX_DEPTH_MAX_V6  9007199254740991LL        /* 2^53 - 1 */


/*
 * One row per stable room version; the facts come from reference §5.5-5.7
 * (IDs, redaction), §4.6 (key validity), §5.1 (strict JSON), §6.2 (auth
 * rules), §7 (depth) and §11 (feature matrix). Flags not named are 0.
 */
static const mx_room_version_t  mx_room_versions_table[] = {

    { .id = "1",
      .event_id_format = MX_EVENT_ID_SERVER,
      .redaction = MX_REDACT_V1,
      .max_depth = MX_DEPTH_MAX_V1,
      .event_refs_with_hashes = 1, .aliases_auth_rule = 1,
      .create_in_auth_events = 1 },

    { .id = "2",
      .event_id_format = MX_EVENT_ID_SERVER,
      .redaction = MX_REDACT_V1,
      .max_depth = MX_DEPTH_MAX_V1,
      .event_refs_with_hashes = 1, .aliases_auth_rule = 1,
      .create_in_auth_events = 1 },

    { .id = "3",
      .event_id_format = MX_EVENT_ID_HASH_STD,
      .redaction = MX_REDACT_V1,
      .max_depth = MX_DEPTH_MAX_V1,
      .aliases_auth_rule = 1, .create_in_auth_events = 1 },

    { .id = "4",
      .event_id_format = MX_EVENT_ID_HASH_URL,
      .redaction = MX_REDACT_V1,
      .max_depth = MX_DEPTH_MAX_V1,
      .aliases_auth_rule = 1, .create_in_auth_events = 1 },

    { .id = "5",
      .event_id_format = MX_EVENT_ID_HASH_URL,
      .redaction = MX_REDACT_V1,
      .max_depth = MX_DEPTH_MAX_V1,
      .aliases_auth_rule = 1, .enforce_key_validity = 1,
      .create_in_auth_events = 1 },

    { .id = "6",
      .event_id_format = MX_EVENT_ID_HASH_URL,
      .redaction = MX_REDACT_V6,
      .max_depth = MX_DEPTH_MAX_V6,
      .enforce_key_validity = 1, .strict_json = 1,
      .create_in_auth_events = 1 },

    { .id = "7",
      .event_id_format = MX_EVENT_ID_HASH_URL,
      .redaction = MX_REDACT_V6,
      .max_depth = MX_DEPTH_MAX_V6,
      .enforce_key_validity = 1, .strict_json = 1, .knock = 1,
      .create_in_auth_events = 1 },

    { .id = "8",
      .event_id_format = MX_EVENT_ID_HASH_URL,
      .redaction = MX_REDACT_V8,
      .max_depth = MX_DEPTH_MAX_V6,
      .enforce_key_validity = 1, .strict_json = 1, .knock = 1, .restricted = 1,
      .create_in_auth_events = 1 },

    { .id = "9",
      .event_id_format = MX_EVENT_ID_HASH_URL,
      .redaction = MX_REDACT_V9,
      .max_depth = MX_DEPTH_MAX_V6,
      .enforce_key_validity = 1, .strict_json = 1, .knock = 1, .restricted = 1,
      .create_in_auth_events = 1 },

    { .id = "10",
      .event_id_format = MX_EVENT_ID_HASH_URL,
      .redaction = MX_REDACT_V9,
      .max_depth = MX_DEPTH_MAX_V6,
      .enforce_key_validity = 1, .strict_json = 1, .knock = 1, .restricted = 1,
      .knock_restricted = 1, .integer_power_levels = 1,
      .create_in_auth_events = 1 },

    { .id = "11",
      .event_id_format = MX_EVENT_ID_HASH_URL,
      .redaction = MX_REDACT_V11,
      .max_depth = MX_DEPTH_MAX_V6,
      .enforce_key_validity = 1, .strict_json = 1, .knock = 1, .restricted = 1,
      .knock_restricted = 1, .integer_power_levels = 1, .creator_is_sender = 1,
      .create_in_auth_events = 1 },

    { .id = "12",
      .event_id_format = MX_EVENT_ID_HASH_URL,
      .redaction = MX_REDACT_V11,
      .max_depth = MX_DEPTH_MAX_V6,
      .enforce_key_validity = 1, .strict_json = 1, .knock = 1, .restricted = 1,
      .knock_restricted = 1, .integer_power_levels = 1, .creator_is_sender = 1,
      .room_id_from_create = 1, .additional_creators = 1,
      .creators_infinite_power = 1 },
};

#define MX_ROOM_VERSIONS_N                                                    \
    (sizeof(mx_room_versions_table) / sizeof(mx_room_versions_table[0]))


const mx_room_version_t *
mx_room_version(const char *id, size_t len)
{
    size_t  i;

    if (id == NULL) {
        return NULL;
    }

    for (i = 0; i < MX_ROOM_VERSIONS_N; i++) {
        if (strlen(mx_room_versions_table[i].id) == len
            && memcmp(mx_room_versions_table[i].id, id, len) == 0)
        {
            return &mx_room_versions_table[i];
        }
    }

    return NULL;
}


const mx_room_version_t *
mx_room_versions(size_t *n)
{
    *n = MX_ROOM_VERSIONS_N;

    return mx_room_versions_table;
}
