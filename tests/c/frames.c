/* Per-frame headers and variable-size frames from C. The stream NAME carries uint16 frames
 * of up to 6 rows of 4 and a header per frame laid out as struct frame_header (in NumPy:
 * [('t', '<u8'), ('exposure', '<f4'), ('roi', '<u2', (4,)), ('', '|V4')]); frame n has
 * n % 7 rows, element i = n * 100 + i, and the header of frame_header_of(n) (the same as the
 * Rust worker's and the Python tests').
 *
 *   frames SOCKET NAME check COUNT    subscribe losslessly, print "ready", check COUNT frames
 *                                     (rows, length, data, header), print "ok frames=COUNT"
 *   frames SOCKET NAME publish COUNT  create the stream, wait for a subscriber, publish COUNT
 *                                     frames: even ones loaned (mms_publisher_header,
 *                                     mms_publisher_set_rows), odd ones sent
 *                                     (mms_publisher_send_with_header); print "published" */
#include <stdint.h>
#include "check.h"

struct frame_header {
    uint64_t t;
    float exposure;
    uint16_t roi[4];
    uint8_t pad[4];
};

static struct frame_header frame_header_of(uint64_t n) {
    struct frame_header h;
    memset(&h, 0, sizeof h);
    h.t = 1000000 + n;
    h.exposure = (float)n * 0.5f;
    for (int k = 0; k < 4; k++) h.roi[k] = (uint16_t)(n + (uint64_t)k);
    return h;
}

static int check(mms_client *c, const char *name, unsigned long long count) {
    mms_subscriber *s;
    CHECK(mms_subscribe(c, name, true, 2, &s));
    printf("ready\n");
    fflush(stdout);
    for (unsigned long long n = 0; n < count; n++) {
        mms_sample *sample;
        CHECK(mms_receive(s, 30000, &sample));
        const uint16_t *frame = mms_sample_data(sample);
        uint64_t rows = mms_sample_rows(sample);
        if (mms_sample_number(sample) != n || rows != n % 7
                || mms_sample_len(sample) != rows * 4 * sizeof(uint16_t)) {
            fprintf(stderr, "frame %llu: number %llu rows %llu len %zu\n", n,
                    (unsigned long long)mms_sample_number(sample), (unsigned long long)rows,
                    mms_sample_len(sample));
            return 1;
        }
        for (size_t i = 0; i < rows * 4; i++) {
            if (frame[i] != (uint16_t)(n * 100 + i)) {
                fprintf(stderr, "frame %llu element %zu is %u\n", n, i, frame[i]);
                return 1;
            }
        }
        struct frame_header want = frame_header_of(n);
        const struct frame_header *got = mms_sample_header(sample);
        if (got == NULL || mms_sample_header_len(sample) != sizeof want
                || got->t != want.t || got->exposure != want.exposure
                || memcmp(got->roi, want.roi, sizeof want.roi) != 0) {
            fprintf(stderr, "frame %llu: header differs\n", n);
            return 1;
        }
        mms_sample_release(sample);
    }
    printf("ok frames=%llu\n", count);
    mms_subscriber_free(s);
    return 0;
}

static int publish(mms_client *c, const char *name, unsigned long long count) {
    uint64_t shape[2] = {6, 4};
    mms_stream_options *o;
    CHECK(mms_stream_options_new(name, "<u2", 2, shape, &o));
    CHECK(mms_stream_options_set(o, MMS_OPTION_VARIABLE, 1));
    CHECK(mms_stream_options_set_header(
        o, "[('t', '<u8'), ('exposure', '<f4'), ('roi', '<u2', (4,)), ('', '|V4')]"));
    CHECK(mms_create_stream_with(c, o));
    mms_stream_options_free(o);
    mms_publisher *p;
    CHECK(mms_publisher_open(c, name, &p));
    uint32_t attached;
    CHECK(mms_publisher_wait_for_subscribers(p, 1, 60000, &attached));
    for (unsigned long long n = 0; n < count; n++) {
        struct frame_header h = frame_header_of(n);
        uint16_t rows = (uint16_t)(n % 7);
        if (n % 2 == 0) {
            void *data;
            size_t len;
            CHECK(mms_publisher_loan(p, 30000, &data, &len, NULL));
            if (len != 6 * 4 * sizeof(uint16_t)) return 1;
            uint16_t *frame = data;
            for (size_t i = 0; i < (size_t)rows * 4; i++) frame[i] = (uint16_t)(n * 100 + i);
            void *header;
            size_t header_len;
            CHECK(mms_publisher_header(p, &header, &header_len));
            if (header_len != sizeof h) return 1;
            memcpy(header, &h, sizeof h);
            CHECK(mms_publisher_set_rows(p, rows));
            EXPECT(mms_publisher_set_rows(p, 7), MMS_ERR_INVALID_ARGUMENT);
            CHECK(mms_publisher_publish(p, NULL));
        } else {
            uint16_t frame[24];
            for (size_t i = 0; i < (size_t)rows * 4; i++) frame[i] = (uint16_t)(n * 100 + i);
            CHECK(mms_publisher_send_with_header(p, frame, (size_t)rows * 4 * sizeof(uint16_t),
                                                 &h, sizeof h, 30000, NULL));
        }
    }
    /* Not whole rows, and a header of the wrong size: refused, nothing published. */
    uint16_t frame[24] = {0};
    struct frame_header h = frame_header_of(0);
    EXPECT(mms_publisher_send_with_header(p, frame, 3, &h, sizeof h, 0, NULL), MMS_ERR_INVALID_ARGUMENT);
    EXPECT(mms_publisher_send_with_header(p, frame, 8, &h, 3, 0, NULL), MMS_ERR_INVALID_ARGUMENT);
    printf("published\n");
    mms_publisher_free(p);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: frames SOCKET NAME check|publish COUNT\n");
        return 2;
    }
    mms_client *c;
    CHECK(mms_connect(argv[1], &c));
    unsigned long long count = strtoull(argv[4], NULL, 10);
    int rc = strcmp(argv[3], "check") == 0 ? check(c, argv[2], count)
                                           : publish(c, argv[2], count);
    mms_client_free(c);
    return rc;
}
