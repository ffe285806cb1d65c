/*
 * Copyright (C) nginx-matrix-join authors.
 * The checks of a received join PDU that need no room state: reference
 * §2.2 (send_join validation and the statuses implementations answer),
 * §5.1 (canonical JSON by room version), §5.4-5.5 (hashes, event IDs) and
 * §7 (limits).
 */

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mx_auth.h"
#include "mx_id.h"
#include "mx_json.h"
#include "mx_pdu.h"


#define MX_PDU_MEMBER      "m.room.member"
#define MX_PDU_AUTHORISER  "join_authorised_via_users_server"


static mx_pdu_e mx_pdu_set(mx_pdu_result_t *res, mx_pdu_e code,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static mx_pdu_e mx_pdu_parse_error(const mx_room_version_t *rv,
    const char *body, size_t len, const mx_err_t *err, mx_pdu_result_t *res);
static mx_pdu_e mx_pdu_string(const json_t *pdu, const char *key,
    const char **s, size_t *len, mx_pdu_result_t *res);
static mx_pdu_e mx_pdu_integer(const json_t *pdu, const char *key,
    json_int_t *n, mx_pdu_result_t *res);
static mx_pdu_e mx_pdu_refs(const mx_room_version_t *rv, const json_t *pdu,
    const char *key, size_t max, mx_pdu_result_t *res);
static mx_pdu_e mx_pdu_check_size(const mx_room_version_t *rv,
    const json_t *pdu, mx_pdu_result_t *res);
static const char *mx_pdu_str(const json_t *obj, const char *key);
static int mx_pdu_user_of(const char *user, const char *server);


mx_pdu_e
mx_pdu_parse_join(const mx_room_version_t *rv, const char *body, size_t len,
    json_t **pdu, mx_pdu_result_t *res)
{
    json_t    *v;
    mx_pdu_e   rc;
    mx_err_t   err;

    *pdu = NULL;

    /* the handler refuses a larger body first; this is for other callers */

    if (len > MX_PDU_MAX_LEN) {
        return mx_pdu_set(res, MX_PDU_TOO_LARGE,
                          "body is %zu bytes, more than %d", len,
                          MX_PDU_MAX_LEN);
    }

    if (body == NULL || len == 0) {
        return mx_pdu_set(res, MX_PDU_NOT_JSON, "body is empty");
    }

    v = mx_json_parse(body, len, rv->strict_json ? MX_JSON_STRICT : 0, &err);
    if (v == NULL) {
        return mx_pdu_parse_error(rv, body, len, &err, res);
    }

    rc = mx_pdu_check_format(rv, v, res);

    if (rc != MX_PDU_OK) {
        json_decref(v);
        return rc;
    }

    *pdu = v;

    return MX_PDU_OK;
}


/*
 * Why mx_json_parse() failed: JSON that a lenient parse reads broke a
 * canonical JSON rule of v6+ (sytest "send_join rejects invalid JSON for
 * room version 6" wants M_BAD_JSON); anything else is not JSON at all,
 * as Synapse says (M_NOT_JSON), except an integer beyond 64 bits, which is
 * JSON that we cannot hold.
 */

static mx_pdu_e
mx_pdu_parse_error(const mx_room_version_t *rv, const char *body,
    size_t len, const mx_err_t *err, mx_pdu_result_t *res)
{
    json_t        *v;
    json_error_t   e;

    v = json_loadb(body, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &e);

    if (v != NULL) {
        json_decref(v);
        return mx_pdu_set(res, MX_PDU_BAD_JSON,
                          "%s: room version %s requires canonical JSON",
                          err->text, rv->id);
    }

    switch (json_error_code(&e)) {

    case json_error_out_of_memory:
        return mx_pdu_set(res, MX_PDU_ERROR, "out of memory parsing the body");

    case json_error_numeric_overflow:
        return mx_pdu_set(res, MX_PDU_BAD_JSON,
                          "body has an integer beyond 64 bits: %s",
                          err->text);

    default:
        return mx_pdu_set(res, MX_PDU_NOT_JSON, "body is not JSON: %s",
                          err->text);
    }
}


mx_pdu_e
mx_pdu_check_format(const mx_room_version_t *rv, const json_t *pdu,
    mx_pdu_result_t *res)
{
    size_t         len, slen;
    mx_pdu_e       rc;
    mx_err_t       err;
    json_int_t     depth, ts;
    const char    *s, *server;
    const json_t  *v;

    if (!json_is_object(pdu)) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON, "PDU is not a JSON object");
    }

    /* a value built in code has not been through the strict parser */

    if (rv->strict_json && mx_json_check_strict(pdu, &err) != 0) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON,
                          "%s: room version %s requires canonical JSON",
                          err.text, rv->id);
    }

    /* a join always has a room_id, v12 included (only create lacks it) */

    rc = mx_pdu_string(pdu, "room_id", &s, &len, res);
    if (rc != MX_PDU_OK) {
        return rc;
    }

    if (!mx_room_id_valid(s, len, rv->room_id_from_create)) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON,
                          "room_id \"%.128s\" is not a room ID", s);
    }

    rc = mx_pdu_string(pdu, "sender", &s, &len, res);
    if (rc != MX_PDU_OK) {
        return rc;
    }

    if (!mx_user_id_valid(s, len)) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON,
                          "sender \"%.128s\" is not a user ID", s);
    }

    rc = mx_pdu_string(pdu, "type", &s, &len, res);
    if (rc != MX_PDU_OK) {
        return rc;
    }

    /* the send_join body schema requires state_key */

    rc = mx_pdu_string(pdu, "state_key", &s, &len, res);
    if (rc != MX_PDU_OK) {
        return rc;
    }

    v = json_object_get(pdu, "content");

    if (!json_is_object(v)) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON, "content is %s",
                          v == NULL ? "missing" : "not an object");
    }

    rc = mx_pdu_integer(pdu, "depth", &depth, res);
    if (rc != MX_PDU_OK) {
        return rc;
    }

    if (depth < 0 || depth > rv->max_depth) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON,
                          "depth %" JSON_INTEGER_FORMAT " is outside 0 to "
                          "%lld (room version %s)", depth,
                          (long long) rv->max_depth, rv->id);
    }

    rc = mx_pdu_integer(pdu, "origin_server_ts", &ts, res);
    if (rc != MX_PDU_OK) {
        return rc;
    }

    rc = mx_pdu_refs(rv, pdu, "prev_events", MX_PDU_PREV_EVENTS_MAX, res);
    if (rc != MX_PDU_OK) {
        return rc;
    }

    rc = mx_pdu_refs(rv, pdu, "auth_events", MX_PDU_AUTH_EVENTS_MAX, res);
    if (rc != MX_PDU_OK) {
        return rc;
    }

    /*
     * An event without signatures fails the signature check that would
     * follow: 403, as sytest's "rejects incorrectly-signed joins" sends
     * it (without hashes either), and before the hashes are looked at.
     */

    v = json_object_get(pdu, "signatures");

    if (v == NULL) {
        return mx_pdu_set(res, MX_PDU_FORBIDDEN, "the event is not signed "
                          "(signatures is missing)");
    }

    if (!json_is_object(v)) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON, "signatures is not an "
                          "object");
    }

    v = json_object_get(pdu, "hashes");

    if (!json_is_object(v)) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON, "hashes is %s",
                          v == NULL ? "missing" : "not an object");
    }

    if (json_object_get(v, "sha256") == NULL) {
        /*
         * Synapse checks signatures before hashes, and sytest's fake
         * signature comes with "hashes": {}: the answer is the signature
         * check's, 403.
         */
        return mx_pdu_set(res, MX_PDU_FORBIDDEN, "the event has no content "
                          "hash (hashes.sha256 is missing): it cannot be "
                          "signed properly");
    }

    if (!json_is_string(json_object_get(v, "sha256"))) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON,
                          "hashes.sha256 is not a string");
    }

    /* v1, v2: the sending server chose the ID; v3+ derive it */

    if (rv->event_id_format == MX_EVENT_ID_SERVER) {
        rc = mx_pdu_string(pdu, "event_id", &s, &len, res);
        if (rc != MX_PDU_OK) {
            return rc;
        }

        server = mx_id_server(s, len, '$', &slen);

        if (server == NULL || server - 1 == s + 1
            || !mx_server_name_valid(server, slen))
        {
            return mx_pdu_set(res, MX_PDU_BAD_JSON,
                              "event_id \"%.128s\" is not \"$opaque:server\"",
                              s);
        }
    }

    return mx_pdu_check_size(rv, pdu, res);
}


mx_pdu_e
mx_pdu_check_join_shape(const mx_room_version_t *rv, const json_t *pdu,
    const char *path_room_id, const char *path_event_id, const char *origin,
    const char *server, char event_id[MX_EVENT_ID_MAX], mx_pdu_result_t *res)
{
    char           id[MX_EVENT_ID_MAX], *eid;
    mx_err_t       err;
    const char    *room_id, *type, *membership, *sender, *state_key;
    const char    *authoriser;
    const json_t  *content;

    eid = (event_id != NULL) ? event_id : id;
    eid[0] = '\0';

    /* 1. the room of the path (Synapse, GMSL: 400 M_BAD_JSON) */

    room_id = mx_pdu_str(pdu, "room_id");

    if (room_id == NULL || strcmp(room_id, path_room_id) != 0) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON,
                          "room_id \"%.128s\" is not the path's room "
                          "\"%.128s\"", room_id ? room_id : "",
                          path_room_id);
    }

    /* 2. the event of the path (GMSL: 400 M_BAD_JSON) */

    if (mx_event_id(rv, pdu, eid, MX_EVENT_ID_MAX, &err) < 0) {
        eid[0] = '\0';
        return mx_pdu_set(res, MX_PDU_BAD_JSON,
                          "cannot compute the event ID: %s", err.text);
    }

    if (strcmp(eid, path_event_id) != 0) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON,
                          "the event's ID \"%s\" (%s) is not the path's "
                          "\"%.128s\"", eid,
                          rv->event_id_format == MX_EVENT_ID_SERVER
                          ? "its event_id" : "from its reference hash",
                          path_event_id);
    }

    /* 3. a join by oneself (Complement: 400, any errcode) */

    type = mx_pdu_str(pdu, "type");

    if (type == NULL || strcmp(type, MX_PDU_MEMBER) != 0) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON,
                          "type \"%.128s\" is not " MX_PDU_MEMBER,
                          type ? type : "");
    }

    content = json_object_get(pdu, "content");
    membership = mx_pdu_str(content, "membership");

    if (membership == NULL) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON,
                          "content.membership is missing or not a string");
    }

    if (mx_membership_parse(membership) != MX_MEMBERSHIP_JOIN) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON,
                          "content.membership \"%.32s\" is not join",
                          membership);
    }

    sender = mx_pdu_str(pdu, "sender");
    state_key = mx_pdu_str(pdu, "state_key");

    if (sender == NULL || state_key == NULL
        || strcmp(sender, state_key) != 0)
    {
        return mx_pdu_set(res, MX_PDU_BAD_JSON,
                          "state_key \"%.128s\" is not the sender \"%.128s\" "
                          "(a join is by the joining user)",
                          state_key ? state_key : "", sender ? sender : "");
    }

    /* 4. sytest replays another server's join: 403 M_FORBIDDEN */

    if (!mx_pdu_user_of(sender, origin)) {
        return mx_pdu_set(res, MX_PDU_FORBIDDEN,
                          "sender \"%.128s\" is not a user of the requesting "
                          "server \"%.128s\"", sender, origin);
    }

    /* 5. a mismatch would make the event its redacted copy: not sent on */

    if (mx_event_check_content_hash(pdu, &err) != 0) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON,
                          "content hash: %s (the event would be treated as "
                          "redacted)", err.text);
    }

    /* 6. only a resident can authorise a restricted join (§2.3) */

    if (rv->restricted && json_object_get(content, MX_PDU_AUTHORISER)) {
        authoriser = mx_pdu_str(content, MX_PDU_AUTHORISER);

        if (authoriser == NULL
            || !mx_user_id_valid(authoriser, strlen(authoriser)))
        {
            return mx_pdu_set(res, MX_PDU_BAD_JSON,
                              "content." MX_PDU_AUTHORISER " is not a user "
                              "ID");
        }

        if (!mx_pdu_user_of(authoriser, server)) {
            return mx_pdu_set(res, MX_PDU_BAD_JSON,
                              "content." MX_PDU_AUTHORISER " \"%.128s\" is "
                              "not a user of this server \"%.128s\"",
                              authoriser, server);
        }
    }

    return mx_pdu_set(res, MX_PDU_OK, "a join of %.128s by %.128s", room_id,
                      sender);
}


int
mx_pdu_join_signers(const mx_room_version_t *rv, const json_t *pdu,
    char names[2][256], mx_pdu_result_t *res)
{
    int       n;
    mx_err_t  err;

    n = mx_event_required_signers(rv, pdu, names, &err);

    if (n < 0) {
        mx_pdu_set(res, MX_PDU_BAD_JSON, "no signing server: %s", err.text);
        return -1;
    }

    mx_pdu_set(res, MX_PDU_OK, "signed by %s%s%s", names[0],
               n > 1 ? " and " : "", n > 1 ? names[1] : "");

    return n;
}


mx_pdu_e
mx_pdu_check_join_signatures(const mx_room_version_t *rv, const json_t *pdu,
    mx_key_lookup_pt lookup, void *data, mx_pdu_result_t *res)
{
    mx_err_t  err;

    if (mx_event_check_signatures(rv, pdu, lookup, data, &err) != 0) {
        return mx_pdu_set(res, MX_PDU_FORBIDDEN, "signature check failed: %s",
                          err.text);
    }

    return mx_pdu_set(res, MX_PDU_OK, "signatures verified");
}


/* pdu[key]: a string without NUL, at most 255 bytes (§7). */

static mx_pdu_e
mx_pdu_string(const json_t *pdu, const char *key, const char **s,
    size_t *len, mx_pdu_result_t *res)
{
    const json_t  *v;

    v = json_object_get(pdu, key);

    if (!json_is_string(v)) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON, "%s is %s", key,
                          v == NULL ? "missing" : "not a string");
    }

    *s = json_string_value(v);
    *len = json_string_length(v);

    /* 413 as Synapse's EventSizeError */

    if (*len > MX_ID_MAX_LEN) {
        return mx_pdu_set(res, MX_PDU_TOO_LARGE,
                          "%s is %zu bytes, more than %d", key, *len,
                          MX_ID_MAX_LEN);
    }

    if (memchr(*s, '\0', *len) != NULL) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON,
                          "%s contains a NUL character", key);
    }

    return MX_PDU_OK;
}


static mx_pdu_e
mx_pdu_integer(const json_t *pdu, const char *key, json_int_t *n,
    mx_pdu_result_t *res)
{
    const json_t  *v;

    *n = 0;

    v = json_object_get(pdu, key);

    if (!json_is_integer(v)) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON, "%s is %s", key,
                          v == NULL ? "missing" : "not an integer");
    }

    *n = json_integer_value(v);

    return MX_PDU_OK;
}


/*
 * prev_events or auth_events: at most max entries, each an event ID
 * (v3+) or an [event ID, {"sha256": hash}] pair (v1, v2). An event ID
 * here is "$" and more, without NUL, at most 255 bytes; whether the event
 * exists is for the auth and state checks.
 */

static mx_pdu_e
mx_pdu_refs(const mx_room_version_t *rv, const json_t *pdu, const char *key,
    size_t max, mx_pdu_result_t *res)
{
    size_t         i, len;
    const char    *s;
    const json_t  *list, *e, *id, *h;

    list = json_object_get(pdu, key);

    if (!json_is_array(list)) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON, "%s is %s", key,
                          list == NULL ? "missing" : "not a list");
    }

    if (json_array_size(list) > max) {
        return mx_pdu_set(res, MX_PDU_BAD_JSON,
                          "%s has %zu entries, more than %zu", key,
                          json_array_size(list), max);
    }

    json_array_foreach(list, i, e) {

        if (rv->event_refs_with_hashes) {
            h = json_array_get(e, 1);

            if (!json_is_array(e) || json_array_size(e) != 2
                || !json_is_object(h))
            {
                return mx_pdu_set(res, MX_PDU_BAD_JSON,
                                  "%s[%zu] is not an [event ID, hashes] "
                                  "pair (room version %s)", key, i, rv->id);
            }

            if (!json_is_string(json_object_get(h, "sha256"))) {
                return mx_pdu_set(res, MX_PDU_BAD_JSON,
                                  "%s[%zu] has no sha256 hash", key, i);
            }

            id = json_array_get(e, 0);

        } else {
            if (!json_is_string(e)) {
                return mx_pdu_set(res, MX_PDU_BAD_JSON,
                                  "%s[%zu] is not an event ID string "
                                  "(room version %s)", key, i, rv->id);
            }

            id = e;
        }

        s = json_string_value(id);
        len = json_string_length(id);

        if (s == NULL || len < 2 || len > MX_ID_MAX_LEN || s[0] != '$'
            || memchr(s, '\0', len) != NULL)
        {
            return mx_pdu_set(res, MX_PDU_BAD_JSON,
                              "%s[%zu] is not an event ID", key, i);
        }
    }

    return MX_PDU_OK;
}


/* The whole PDU, signatures included, as canonical JSON (§7). */

static mx_pdu_e
mx_pdu_check_size(const mx_room_version_t *rv, const json_t *pdu,
    mx_pdu_result_t *res)
{
    size_t    len;
    mx_buf_t  buf = MX_BUF_INIT;
    mx_err_t  err;

    if (mx_json_canonical(pdu, &buf, &err) == 0) {
        len = buf.len;
        mx_buf_free(&buf);

    } else {
        mx_buf_free(&buf);

        /* strict values always encode: this was memory */

        if (rv->strict_json) {
            return mx_pdu_set(res, MX_PDU_ERROR,
                              "cannot encode the PDU: %s", err.text);
        }

        /*
         * v1-v5 may hold floats, which canonical JSON cannot write; the
         * compact jansson form is the same bytes around them
         */

        len = json_dumpb(pdu, NULL, 0, JSON_COMPACT);

        if (len == 0) {
            return mx_pdu_set(res, MX_PDU_ERROR, "cannot measure the PDU");
        }
    }

    if (len > MX_PDU_MAX_LEN) {
        return mx_pdu_set(res, MX_PDU_TOO_LARGE,
                          "PDU is %zu bytes as canonical JSON, more than %d",
                          len, MX_PDU_MAX_LEN);
    }

    return mx_pdu_set(res, MX_PDU_OK, "PDU of room version %s, %zu bytes",
                      rv->id, len);
}


static mx_pdu_e
mx_pdu_set(mx_pdu_result_t *res, mx_pdu_e code, const char *fmt, ...)
{
    va_list  args;

    if (res == NULL) {
        return code;
    }

    res->code = code;

    switch (code) {

    case MX_PDU_OK:
        res->status = 200;
        res->errcode = NULL;
        break;

    case MX_PDU_NOT_JSON:
        res->status = 400;
        res->errcode = "M_NOT_JSON";
        break;

    case MX_PDU_BAD_JSON:
        res->status = 400;
        res->errcode = "M_BAD_JSON";
        break;

    case MX_PDU_TOO_LARGE:
        res->status = 413;
        res->errcode = "M_TOO_LARGE";
        break;

    case MX_PDU_FORBIDDEN:
        res->status = 403;
        res->errcode = "M_FORBIDDEN";
        break;

    default: /* MX_PDU_ERROR */
        res->status = 500;
        res->errcode = "M_UNKNOWN";
        break;
    }

    va_start(args, fmt);
    vsnprintf(res->reason, sizeof(res->reason), fmt, args);
    va_end(args);

    return code;
}


/* obj[key] when it is a string without NUL inside, else NULL. */

static const char *
mx_pdu_str(const json_t *obj, const char *key)
{
    const json_t  *v;

    v = json_object_get(obj, key);

    if (!json_is_string(v)
        || strlen(json_string_value(v)) != json_string_length(v))
    {
        return NULL;
    }

    return json_string_value(v);
}


/* Whether user's server is server, compared byte for byte (§7). */

static int
mx_pdu_user_of(const char *user, const char *server)
{
    size_t       slen;
    const char  *s;

    s = mx_id_server(user, strlen(user), '@', &slen);

    return s != NULL && slen == strlen(server)
           && memcmp(s, server, slen) == 0;
}
