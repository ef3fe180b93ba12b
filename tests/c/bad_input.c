/* Bad input through the C API: every case must return the documented status with a message,
 * never crash. Prints one line per refused call; exits 1 at the first surprise. */
#include "check.h"

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: bad_input SOCKET\n"); return 2; }
    mms_client *c = NULL;
    EXPECT(mms_connect(argv[1], NULL), MMS_ERR_INVALID_ARGUMENT);
    EXPECT(mms_connect("/nonexistent/mmshare.sock", &c), MMS_ERR_CONNECT);
    CHECK(mms_connect(argv[1], &c));

    /* NULL handles, names, shapes and out-pointers. */
    mms_info info;
    mms_array *a = NULL;
    uint64_t shape[1] = {4};
    EXPECT(mms_stat(NULL, "x", &info), MMS_ERR_INVALID_ARGUMENT);
    EXPECT(mms_stat(c, NULL, &info), MMS_ERR_INVALID_ARGUMENT);
    EXPECT(mms_stat(c, "x", NULL), MMS_ERR_INVALID_ARGUMENT);
    EXPECT(mms_stat(c, "no-such-array", &info), MMS_ERR_NOT_FOUND);
    EXPECT(mms_create_array(c, "a", "<f8", 1, NULL, 0, 0, &a), MMS_ERR_INVALID_ARGUMENT);
    EXPECT(mms_create_array(c, "a", "<f8", 99, shape, 0, 0, &a), MMS_ERR_INVALID_ARGUMENT);
    EXPECT(mms_create_array(c, "a", "not-a-dtype", 1, shape, 0, 0, &a), MMS_ERR_DTYPE);
    EXPECT(mms_create_array(c, "../escape", "<f8", 1, shape, 0, 0, &a), MMS_ERR_INVALID_ARGUMENT);
    EXPECT(mms_create_array(c, "a", "<f8", 1, shape, 0x10000, 0, &a), MMS_ERR_INVALID_ARGUMENT);
    EXPECT(mms_create_array(c, "a", "<f8", 1, shape, 0x10, 0, &a), MMS_ERR_INVALID_ARGUMENT);
    EXPECT(mms_create_array(c, "a", "<f8", 1, shape, 33u << MMS_CREATE_STRIPES_SHIFT, 0, &a),
           MMS_ERR_INVALID_ARGUMENT);
    EXPECT(mms_array_read(NULL, NULL, 0, NULL), MMS_ERR_INVALID_ARGUMENT);
    EXPECT(mms_publisher_loan(NULL, 0, NULL, NULL, NULL), MMS_ERR_INVALID_ARGUMENT);
    EXPECT(mms_receive(NULL, 0, NULL), MMS_ERR_INVALID_ARGUMENT);

    /* A real array: wrong dtype, wrong lengths, writes through a read-only handle. */
    CHECK(mms_create_array(c, "a", "<f8", 1, shape, MMS_CREATE_MEMORY, 0, NULL));
    EXPECT(mms_create_array(c, "a", "<f8", 1, shape, 0, 0, NULL), MMS_ERR_ALREADY_EXISTS);
    EXPECT(mms_open_array(c, "a", "<i4", false, &a), MMS_ERR_DTYPE);
    CHECK(mms_open_array(c, "a", "<f8", false, &a));
    double buf[4] = {0};
    EXPECT(mms_array_read(a, buf, sizeof buf - 1, NULL), MMS_ERR_INVALID_ARGUMENT);
    EXPECT(mms_array_read(a, NULL, sizeof buf, NULL), MMS_ERR_INVALID_ARGUMENT);
    EXPECT(mms_array_write(a, buf, sizeof buf, NULL), MMS_ERR_PERMISSION);
    void *data;
    size_t len;
    EXPECT(mms_array_begin_write(a, &data, &len), MMS_ERR_PERMISSION);
    EXPECT(mms_array_commit(a, NULL), MMS_ERR_INVALID_ARGUMENT);
    EXPECT(mms_array_wait(a, 1000, 10, NULL), MMS_ERR_TIMEOUT);

    /* A closed handle answers MMS_ERR_CLOSED until it is freed. */
    mms_array_close(a);
    EXPECT(mms_array_read(a, buf, sizeof buf, NULL), MMS_ERR_CLOSED);
    EXPECT(mms_array_info(a, &info), MMS_ERR_CLOSED);
    mms_array_close(a); /* twice is fine */
    mms_array_free(a);
    mms_array_free(NULL);

    /* A write left open: a second begin is refused; abort marks the array torn. */
    CHECK(mms_open_array(c, "a", NULL, true, &a));
    CHECK(mms_array_begin_write(a, &data, &len));
    EXPECT(mms_array_begin_write(a, &data, &len), MMS_ERR_BUSY);
    EXPECT(mms_array_read(a, buf, sizeof buf, NULL), MMS_ERR_BUSY); /* would wait for itself */
    EXPECT(mms_array_wait(a, 0, 10, NULL), MMS_ERR_BUSY);
    EXPECT(mms_array_write(a, buf, sizeof buf, NULL), MMS_ERR_BUSY);
    ((double *)data)[0] = 42.0; /* half a write: then the writer gives up */
    CHECK(mms_array_abort(a));
    EXPECT(mms_array_read(a, buf, sizeof buf, NULL), MMS_ERR_TORN);
    if (buf[0] != 42.0) { fprintf(stderr, "a torn read did not copy what was left\n"); return 1; }
    CHECK(mms_array_write(a, buf, sizeof buf, NULL));
    CHECK(mms_array_read(a, buf, sizeof buf, NULL));
    mms_array_free(a);

    /* Streams: the wrong kind, a second publisher, loans out of order, an empty stream. */
    mms_publisher *p, *p2;
    mms_subscriber *s;
    mms_sample *sample = NULL;
    EXPECT(mms_publisher_open(c, "a", &p), MMS_ERR_WRONG_KIND);
    EXPECT(mms_create_stream(c, "s", "<u2", 1, shape, 1, 0, MMS_CREATE_MEMORY, 0), MMS_ERR_INVALID_ARGUMENT);
    CHECK(mms_create_stream(c, "s", "<u2", 1, shape, 4, 0, MMS_CREATE_MEMORY, 0));
    EXPECT(mms_open_array(c, "s", NULL, false, &a), MMS_ERR_WRONG_KIND);
    CHECK(mms_publisher_open(c, "s", &p));
    EXPECT(mms_publisher_open(c, "s", &p2), MMS_ERR_BUSY);
    CHECK(mms_subscribe(c, "s", false, 0, &s));
    EXPECT(mms_receive(s, 0, &sample), MMS_ERR_TIMEOUT);
    EXPECT(mms_receive(s, 20, &sample), MMS_ERR_TIMEOUT);
    CHECK(mms_latest(s, &sample));
    if (sample != NULL) { fprintf(stderr, "latest() of an empty stream gave a sample\n"); return 1; }
    EXPECT(mms_publisher_publish(p, NULL), MMS_ERR_INVALID_ARGUMENT);
    EXPECT(mms_publisher_abandon(p), MMS_ERR_INVALID_ARGUMENT);
    uint16_t frame[4] = {1, 2, 3, 4};
    EXPECT(mms_publisher_send(p, frame, 7, 0, NULL), MMS_ERR_INVALID_ARGUMENT);
    void *slot;
    CHECK(mms_publisher_loan(p, 0, &slot, &len, NULL));
    EXPECT(mms_publisher_loan(p, 0, &slot, &len, NULL), MMS_ERR_BUSY);
    EXPECT(mms_publisher_send(p, frame, sizeof frame, 0, NULL), MMS_ERR_BUSY);
    CHECK(mms_publisher_abandon(p));
    uint64_t number;
    CHECK(mms_publisher_send(p, frame, sizeof frame, 0, &number));
    CHECK(mms_receive(s, 1000, &sample));
    if (memcmp(mms_sample_data(sample), frame, sizeof frame) != 0 || mms_sample_number(sample) != number) {
        fprintf(stderr, "the sample is not the frame sent\n");
        return 1;
    }
    /* The subscriber handle closed while a sample is held: the sample stays readable. */
    mms_subscriber_close(s);
    EXPECT(mms_receive(s, 0, &sample), MMS_ERR_CLOSED);
    if (memcmp(mms_sample_data(sample), frame, sizeof frame) != 0) return 1;
    mms_sample_release(sample);
    mms_sample_release(NULL);
    mms_subscriber_free(s);
    mms_publisher_close(p);
    EXPECT(mms_publisher_send(p, frame, sizeof frame, 0, NULL), MMS_ERR_CLOSED);
    mms_publisher_free(p);
    if (mms_sample_data(NULL) != NULL || mms_sample_len(NULL) != 0) return 1;
    if (strcmp(mms_status_name(MMS_ERR_TIMEOUT), "MMS_ERR_TIMEOUT") != 0) return 1;
    if (strcmp(mms_status_name(12345), "MMS_UNKNOWN_STATUS") != 0) return 1;

    CHECK(mms_delete(c, "a"));
    EXPECT(mms_delete(c, "a"), MMS_ERR_NOT_FOUND);
    mms_client_close(c);
    EXPECT(mms_stat(c, "s", &info), MMS_ERR_CLOSED);
    mms_client_free(c);
    printf("all bad input refused\n");
    return 0;
}
