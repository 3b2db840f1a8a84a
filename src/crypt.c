/*
 * crypt.c - encryption at rest: keys, nonces, and the sealing of pages.
 *
 * Keys. The master key (32 bytes, the caller's) never touches the disk.
 * From it and a store's random 16-byte salt comes the store's root key, a
 * keyed BLAKE2b of the salt; from the root, libsodium's KDF derives the
 * page key (context "armdbpag") and the key check (context "armdbchk")
 * that the meta file holds. The check proves a key at open before any
 * page is read, and reveals nothing of it. Key material lives in
 * sodium_malloc()ed memory (locked, guarded) and is wiped when freed.
 *
 * Pages. Every 4096-byte page of a data or hint file is sealed once, on
 * its own, with XChaCha20-Poly1305 (the default) or AES-256-GCM. The
 * associated data is {kind, shard, file id, page number}, so a page copied
 * to another place, file, shard or kind fails to open. A page's slot holds
 * its nonce and tag (SLOT bytes): in the file's .tags file for data files,
 * after the pages for hint files.
 *
 * Nonces. A nonce is a 64-bit counter, never used twice under one page
 * key: the meta file records a floor below which nonces may have been
 * used, and a writer reserves NONCE_STEP nonces above it (the meta file
 * rewritten, durably) before it seals with any of them. A crash loses the
 * unused rest of a reservation, never reuses one. A new salt (a new store
 * at the same path, or a rekey) is a new page key.
 */
#include "internal.h"

#include <errno.h>
#include <sodium.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>
#include <xxhash.h>

#define NONCE_STEP (1ull << 32)

struct crypt {
    uint32_t cipher;
    unsigned char salt[16];
    unsigned char *key;              /* page key, sodium_malloc()ed */
    crypto_aead_aes256gcm_state *aes; /* expanded page key (AES-256-GCM) */
    struct crypt *kept;               /* next in a crypt_keep() list */
};

static bool aes_available(void)
{
#ifdef ARMDB_FAULT_INJECTION
    /* Tests play a CPU without AES-NI. */
    const char *e = getenv("ARMDB_TEST_NO_AES");
    if (e && *e == '1')
        return false;
#endif
    return crypto_aead_aes256gcm_is_available() != 0;
}

int crypt_init(void)
{
    return sodium_init() < 0 ? err_set(-ENOSYS, "libsodium failed to initialise") : 0;
}

bool crypt_cipher_available(uint32_t cipher)
{
    return cipher == CIPHER_XCHACHA || (cipher == CIPHER_AES && aes_available());
}

const char *crypt_cipher_name(uint32_t cipher)
{
    return cipher == CIPHER_XCHACHA ? "XChaCha20-Poly1305" : cipher == CIPHER_AES ? "AES-256-GCM" : "unknown";
}

int crypt_new(struct crypt **out, uint32_t cipher, const unsigned char master[32], const unsigned char salt[16],
              unsigned char check[32])
{
    *out = NULL;
    if (!crypt_cipher_available(cipher))
        return ARMDB_MISMATCH;
    struct crypt *c = calloc(1, sizeof *c);
    unsigned char *root = sodium_malloc(32);
    if (!c || !root || !(c->key = sodium_malloc(32)) ||
        (cipher == CIPHER_AES && !(c->aes = sodium_malloc(sizeof *c->aes)))) {
        sodium_free(root);
        crypt_free(c);
        return -ENOMEM;
    }
    c->cipher = cipher;
    memcpy(c->salt, salt, 16);
    crypto_generichash(root, 32, salt, 16, master, 32);
    crypto_kdf_derive_from_key(c->key, 32, 1, "armdbpag", root);
    crypto_kdf_derive_from_key(check, 32, 2, "armdbchk", root);
    sodium_free(root);
    if (c->aes)
        crypto_aead_aes256gcm_beforenm(c->aes, c->key);
    *out = c;
    return 0;
}

void crypt_free(struct crypt *c)
{
    if (!c)
        return;
    sodium_free(c->key); /* wipes */
    sodium_free(c->aes);
    free(c);
}

const unsigned char *crypt_salt(const struct crypt *c) { return c->salt; }

void crypt_keep(struct crypt **list, struct crypt *c)
{
    c->kept = *list;
    *list = c;
}

void crypt_free_kept(struct crypt **list)
{
    while (*list) {
        struct crypt *n = (*list)->kept;
        crypt_free(*list);
        *list = n;
    }
}

void crypt_random(void *buf, size_t n) { randombytes_buf(buf, n); }

void crypt_wipe(void *p, size_t n) { sodium_memzero(p, n); }

bool crypt_equal(const void *a, const void *b, size_t n) { return sodium_memcmp(a, b, n) == 0; }

/* ---- nonces ---- */

/* n fresh nonces: the first in *first. Reserves more (the meta file
 * rewritten) when the reservation runs out. */
static int nonce_take(armdb *db, uint32_t n, uint64_t *first)
{
    uint64_t f = atomic_fetch_add(&db->nonce_next, n);
    if (f + n <= atomic_load(&db->nonce_end)) {
        *first = f;
        return 0;
    }
    pthread_mutex_lock(&db->meta_mu);
    int rc = 0;
    while (rc == 0 && f + n > atomic_load(&db->nonce_end)) {
        if (db->rdonly) {
            rc = err_set(ARMDB_READONLY, "store %s was opened read-only: nothing may be sealed", db->dir);
            break;
        }
        uint64_t end = atomic_load(&db->nonce_end);
        if (end < f)
            end = f;
        db->meta.nonce_floor = end + NONCE_STEP;
        if ((rc = db_write_meta(db)) == 0)
            atomic_store(&db->nonce_end, db->meta.nonce_floor);
    }
    pthread_mutex_unlock(&db->meta_mu);
    *first = f;
    return rc;
}

int crypt_reserve(armdb *db)
{
    pthread_mutex_lock(&db->meta_mu);
    uint64_t floor = db->meta.nonce_floor;
    atomic_store(&db->nonce_next, floor);
    db->meta.nonce_floor = floor + NONCE_STEP;
    int rc = db_write_meta(db);
    atomic_store(&db->nonce_end, rc == 0 ? db->meta.nonce_floor : floor);
    pthread_mutex_unlock(&db->meta_mu);
    return rc;
}

/* ---- pages ---- */

static void page_ad(unsigned char ad[16], const struct pagekey *pk, uint64_t page)
{
    put_le32(ad, pk->kind);
    put_le32(ad + 4, pk->shard);
    put_le32(ad + 8, pk->file);
    put_le32(ad + 12, (uint32_t)page);
}

int pk_seal(armdb *db, const struct pagekey *pk, uint64_t page, const unsigned char *src, unsigned char *dst,
            uint32_t n, unsigned char *slots)
{
    const struct crypt *c = pk->cr;
    uint64_t nonce;
    int rc = nonce_take(db, n, &nonce);
    if (rc < 0)
        return rc;
    for (uint32_t i = 0; i < n; i++, nonce++) {
        unsigned char ad[16], npub[24] = {0}, *slot = slots + (size_t)i * SLOT;
        page_ad(ad, pk, page + i);
        put_le64(npub, nonce);
        put_le64(slot, nonce);
        const unsigned char *m = src + (size_t)i * PAGE;
        unsigned char *ct = dst + (size_t)i * PAGE;
        if (c->cipher == CIPHER_AES)
            crypto_aead_aes256gcm_encrypt_detached_afternm(ct, slot + 8, NULL, m, PAGE, ad, 16, NULL, npub, c->aes);
        else
            crypto_aead_xchacha20poly1305_ietf_encrypt_detached(ct, slot + 8, NULL, m, PAGE, ad, 16, NULL, npub,
                                                                c->key);
    }
    return 0;
}

uint32_t pk_open(const struct pagekey *pk, uint64_t page, unsigned char *buf, uint32_t n, const unsigned char *slots)
{
    const struct crypt *c = pk->cr;
    for (uint32_t i = 0; i < n; i++) {
        unsigned char ad[16], npub[24] = {0};
        const unsigned char *slot = slots + (size_t)i * SLOT;
        unsigned char *p = buf + (size_t)i * PAGE;
        page_ad(ad, pk, page + i);
        memcpy(npub, slot, 8);
        int r = c->cipher == CIPHER_AES
                    ? crypto_aead_aes256gcm_decrypt_detached_afternm(p, NULL, p, PAGE, slot + 8, ad, 16, npub, c->aes)
                    : crypto_aead_xchacha20poly1305_ietf_decrypt_detached(p, NULL, p, PAGE, slot + 8, ad, 16, npub,
                                                                          c->key);
        if (r != 0) {
            memset(p, 0, PAGE);
            return i;
        }
    }
    return n;
}

/* ---- blobs ---- */

static const unsigned char seal_magic[8] = {'A', 'R', 'M', 'S', 'E', 'A', 'L', 1};

/* The blob key of a master key (KDF context "armdbblb"). */
static unsigned char *blob_key(const unsigned char *master)
{
    unsigned char *k = sodium_malloc(32);
    if (k)
        crypto_kdf_derive_from_key(k, 32, 3, "armdbblb", master);
    return k;
}

API int armdb_seal(const unsigned char *key, const void *in, size_t n, void *out)
{
    if (!key || (!in && n) || !out)
        return err_set(ARMDB_INVAL, "armdb_seal: key, in and out must not be NULL");
    int rc = crypt_init();
    if (rc < 0)
        return rc;
    unsigned char *k = blob_key(key), *o = out;
    if (!k)
        return err_set(-ENOMEM, "armdb_seal");
    memcpy(o, seal_magic, 8);
    randombytes_buf(o + 8, 24);
    crypto_aead_xchacha20poly1305_ietf_encrypt(o + 32, NULL, in, n, seal_magic, 8, NULL, o + 8, k);
    sodium_free(k);
    return 0;
}

API int armdb_unseal(const unsigned char *key, const void *in, size_t n, void *out)
{
    if (!key || !in || !out)
        return err_set(ARMDB_INVAL, "armdb_unseal: key, in and out must not be NULL");
    const unsigned char *i = in;
    if (n < ARMDB_SEAL_OVERHEAD || memcmp(i, seal_magic, 8) != 0)
        return err_set(ARMDB_CORRUPT, "armdb_unseal: not a sealed blob");
    int rc = crypt_init();
    if (rc < 0)
        return rc;
    unsigned char *k = blob_key(key);
    if (!k)
        return err_set(-ENOMEM, "armdb_unseal");
    rc = crypto_aead_xchacha20poly1305_ietf_decrypt(out, NULL, NULL, i + 32, n - 32, seal_magic, 8, i + 8, k);
    sodium_free(k);
    return rc == 0 ? 0 : err_set(ARMDB_CORRUPT, "armdb_unseal: the blob is damaged, or sealed with another key");
}
