/* Regions of a striped array from C: creates a u64 1024x64 array of 8 stripes (128 rows
 * each), holds a write of rows 0..128 in place, and meanwhile, through a second handle,
 * writes and reads rows 512..640 (another stripe) at once, while a read of the held rows
 * times out; commits, aborts a write of rows 200..300 (its stripes torn, the rest not), and
 * repairs them with a region write. Prints "ok" and the stripe size. */
#include "check.h"

#define ROWS 1024
#define COLS 64

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: regions SOCKET NAME\n"); return 2; }
    mms_client *c;
    CHECK(mms_connect(argv[1], &c));
    uint64_t shape[2] = {ROWS, COLS};
    mms_array *a, *b;
    EXPECT(mms_create_array(c, "bad", "<u8", 2, shape, 33u << MMS_CREATE_STRIPES_SHIFT, 0, NULL),
           MMS_ERR_INVALID_ARGUMENT);
    CHECK(mms_create_array(c, argv[2], "<u8", 2, shape,
                           MMS_CREATE_MEMORY | (8u << MMS_CREATE_STRIPES_SHIFT), 0600, &a));
    mms_info info;
    CHECK(mms_array_info(a, &info));
    if (info.stripe_bytes != 128 * COLS * 8) {
        fprintf(stderr, "stripe_bytes %llu\n", (unsigned long long)info.stripe_bytes);
        return 1;
    }
    CHECK(mms_open_array(c, argv[2], "<u8", true, &b));
    CHECK(mms_array_set_timeout(b, 50));

    /* Rows 0..128 held, written in place. */
    uint64_t s0[1] = {0}, e0[1] = {128};
    void *data;
    size_t len;
    CHECK(mms_array_begin_write_region(a, 1, s0, e0, &data, &len));
    uint64_t *rows = data;
    for (size_t i = 0; i < 128 * COLS; i++) rows[i] = 1;

    /* Meanwhile rows 512..640, column 3..5, through the other handle. */
    uint64_t s1[2] = {512, 3}, e1[2] = {640, 5};
    static uint64_t block[128 * 2];
    for (size_t i = 0; i < 128 * 2; i++) block[i] = 7;
    uint64_t v;
    CHECK(mms_array_write_region(b, 2, s1, e1, block, sizeof block, &v));
    static uint64_t back[128 * 2];
    CHECK(mms_array_read_region(b, 2, s1, e1, back, sizeof back, NULL));
    if (memcmp(back, block, sizeof block) != 0) { fprintf(stderr, "read back differs\n"); return 1; }
    uint64_t one[COLS];
    uint64_t s2[1] = {5}, e2[1] = {6};
    EXPECT(mms_array_read_region(b, 1, s2, e2, one, sizeof one, NULL), MMS_ERR_TIMEOUT);
    EXPECT(mms_array_read_region(b, 1, s2, e2, one, sizeof one - 8, NULL), MMS_ERR_INVALID_ARGUMENT);
    uint64_t bad_e[1] = {ROWS + 1};
    EXPECT(mms_array_read_region(b, 1, s2, bad_e, one, sizeof one, NULL), MMS_ERR_INVALID_ARGUMENT);
    CHECK(mms_array_commit(a, NULL));
    CHECK(mms_array_read_region(b, 1, s2, e2, one, sizeof one, NULL));
    if (one[0] != 1) { fprintf(stderr, "row 5 is %llu\n", (unsigned long long)one[0]); return 1; }

    /* An aborted region write tears its stripes (1 and 2) only. */
    uint64_t s3[1] = {200}, e3[1] = {300};
    CHECK(mms_array_begin_write_region(a, 1, s3, e3, &data, &len));
    CHECK(mms_array_abort(a));
    static uint64_t hundred[100 * COLS];
    EXPECT(mms_array_read_region(b, 1, s3, e3, hundred, sizeof hundred, NULL), MMS_ERR_TORN);
    CHECK(mms_array_read_region(b, 1, s2, e2, one, sizeof one, NULL));
    /* Rows 128..384 are stripes 1 and 2 whole: writing them repairs. */
    uint64_t s4[1] = {128}, e4[1] = {384};
    static uint64_t stripes[256 * COLS];
    CHECK(mms_array_write_region(a, 1, s4, e4, stripes, sizeof stripes, NULL));
    CHECK(mms_array_read_region(b, 1, s3, e3, hundred, sizeof hundred, NULL));
    /* A wait for rows 0..128 times out under writes of rows 512..640, and ends on its own. */
    uint64_t stamp, after;
    CHECK(mms_array_region_stamp(b, 1, s0, e0, &stamp));
    CHECK(mms_array_write_region(a, 2, s1, e1, block, sizeof block, NULL));
    EXPECT(mms_array_wait_region(b, 1, s0, e0, stamp, 30, &after), MMS_ERR_TIMEOUT);
    CHECK(mms_array_write_region(a, 1, s2, e2, one, sizeof one, NULL));
    CHECK(mms_array_wait_region(b, 1, s0, e0, stamp, 1000, &after));
    if (after != stamp + 1) { fprintf(stderr, "stamp %llu -> %llu\n",
        (unsigned long long)stamp, (unsigned long long)after); return 1; }
    printf("ok stripe_bytes=%llu\n", (unsigned long long)info.stripe_bytes);
    mms_array_free(b);
    mms_array_free(a);
    mms_client_free(c);
    return 0;
}
