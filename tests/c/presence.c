/* History, start points and presence from C. Creates stream NAME (u32 frames of 16 elements,
 * 8 slots, history 4) with the options builder, waits for a subscriber (Python), publishes 20
 * frames (element k of frame n = n * 1000 + k), then subscribes itself twice: from the oldest
 * frame still kept (at least the 4 of the history, up to frame 19) and from frame 2, gone,
 * whose gap it must learn exactly. Prints "ok history=H gap=G". */
#include "check.h"

static int take_all(mms_subscriber *s, uint64_t *first, uint64_t *count, uint64_t *missed0) {
    *count = 0;
    for (;;) {
        mms_sample *sample;
        int rc = mms_receive(s, 0, &sample);
        if (rc == MMS_ERR_TIMEOUT) return 0;
        CHECK(rc);
        uint64_t n = mms_sample_number(sample);
        const uint32_t *frame = mms_sample_data(sample);
        if (*count == 0) { *first = n; *missed0 = mms_sample_missed_before(sample); }
        else if (n != *first + *count) { fprintf(stderr, "gap before %llu\n", (unsigned long long)n); return 1; }
        for (int k = 0; k < 16; k++) {
            if (frame[k] != (uint32_t)(n * 1000 + k)) { fprintf(stderr, "frame %llu bad\n", (unsigned long long)n); return 1; }
        }
        mms_sample_release(sample);
        (*count)++;
    }
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: presence SOCKET NAME\n"); return 2; }
    mms_client *c;
    CHECK(mms_connect(argv[1], &c));
    uint64_t shape[1] = {16};
    mms_stream_options *o;
    CHECK(mms_stream_options_new(argv[2], "<u4", 1, shape, &o));
    CHECK(mms_stream_options_set(o, MMS_OPTION_SLOTS, 8));
    CHECK(mms_stream_options_set(o, MMS_OPTION_HISTORY, 4));
    CHECK(mms_stream_options_set(o, MMS_OPTION_FLAGS, MMS_CREATE_MEMORY));
    if (mms_stream_options_set(o, 99, 1) != MMS_ERR_INVALID_ARGUMENT) { fprintf(stderr, "bad option accepted\n"); return 1; }
    CHECK(mms_create_stream_with(c, o));
    mms_stream_options_free(o);
    CHECK(mms_wait_for(c, argv[2], 0));
    if (mms_wait_for(c, "not-there", 100) != MMS_ERR_TIMEOUT) { fprintf(stderr, "no timeout\n"); return 1; }
    mms_publisher *p;
    CHECK(mms_publisher_open(c, argv[2], &p));
    printf("ready\n");
    fflush(stdout);
    uint32_t count = 0;
    CHECK(mms_publisher_wait_for_subscribers(p, 1, 60000, &count));
    for (uint32_t n = 0; n < 20; n++) {
        uint32_t frame[16];
        for (int k = 0; k < 16; k++) frame[k] = n * 1000 + k;
        CHECK(mms_publisher_send(p, frame, sizeof frame, 10000, NULL));
    }
    mms_subscriber *oldest, *resume;
    CHECK(mms_subscribe_from(c, argv[2], false, 1, MMS_START_OLDEST, 0, &oldest));
    uint64_t first = 0, got = 0, missed0 = 0;
    if (take_all(oldest, &first, &got, &missed0)) return 1;
    if (got < 4 || first + got != 20 || missed0 != 0) {
        fprintf(stderr, "oldest: first %llu, %llu frames\n", (unsigned long long)first, (unsigned long long)got);
        return 1;
    }
    /* The hold budget is 8 - 1 - 4 = 3: Python's subscriber holds 2, this one 1. */
    mms_subscriber_free(oldest);
    CHECK(mms_subscribe_from(c, argv[2], true, 1, MMS_START_FRAME, 2, &resume));
    uint64_t asked;
    CHECK(mms_subscriber_first_frame(resume, &asked));
    uint64_t rfirst = 0, rgot = 0, gap = 0;
    if (take_all(resume, &rfirst, &rgot, &gap)) return 1;
    if (asked != 2 || gap != rfirst - 2 || rfirst + rgot != 20) {
        fprintf(stderr, "resume: asked %llu first %llu gap %llu\n", (unsigned long long)asked,
                (unsigned long long)rfirst, (unsigned long long)gap);
        return 1;
    }
    printf("ok history=%llu gap=%llu\n", (unsigned long long)got, (unsigned long long)gap);
    mms_subscriber_free(resume);
    mms_publisher_free(p);
    mms_client_free(c);
    return 0;
}
