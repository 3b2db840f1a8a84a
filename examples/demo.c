/*
 * demo.c - armdb from C in twenty lines: create a store, write, read,
 * delete, scan, and show what the store reports about itself.
 *
 *   demo [DIR]     (default: ./demo-data)
 */
#include "armdb.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int fail(const char *what, int rc)
{
    fprintf(stderr, "demo: %s: %s\n", what, armdb_errmsg()[0] ? armdb_errmsg() : armdb_strerror(rc));
    return 1;
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "demo-data";
    armdb_options o;
    armdb_options_init(&o);
    o.key_len = 8;
    o.flags = ARMDB_CREATE;
    armdb *db;
    int rc = armdb_open(dir, &o, &db);
    if (rc)
        return fail("open", rc);

    char key[8], val[64];
    for (int i = 0; i < 1000; i++) {
        { char tmp[16]; snprintf(tmp, sizeof tmp, "k%06d", i); memcpy(key, tmp, 8); }
        int n = snprintf(val, sizeof val, "value number %d", i);
        if ((rc = armdb_put(db, key, 8, val, (size_t)n)))
            return fail("put", rc);
    }
    memcpy(key, "k000042", 8);
    size_t vlen;
    if ((rc = armdb_get(db, key, 8, val, sizeof val, &vlen)))
        return fail("get", rc);
    printf("get k000042 -> %.*s\n", (int)vlen, val);
    if ((rc = armdb_delete(db, key, 8)))
        return fail("delete", rc);
    rc = armdb_get(db, key, 8, val, sizeof val, &vlen);
    printf("after delete: %s\n", armdb_strerror(rc));
    if ((rc = armdb_sync(db)))
        return fail("sync", rc);

    armdb_iter *it;
    const void *k, *v;
    size_t kl, vl;
    uint64_t seen = 0;
    if ((rc = armdb_iter_open(db, NULL, 0, NULL, 0, 0, &it)))
        return fail("iter", rc);
    while (armdb_iter_next(it, &k, &kl, &v, &vl) == 0)
        seen++;
    armdb_iter_close(it);

    armdb_stat st;
    armdb_stats(db, &st);
    printf("scanned %" PRIu64 " keys; count %" PRIu64 ", %" PRIu64 " shards, %" PRIu64 " files, "
           "%" PRIu64 " bytes written, %" PRIu64 " index bytes per key, O_DIRECT %s\n",
           seen, armdb_count(db), (uint64_t)st.shards, st.files, st.bytes_written, st.index_bytes_per_key,
           st.direct_io ? "on" : "off");
    if ((rc = armdb_close(db)))
        return fail("close", rc);
    return 0;
}
