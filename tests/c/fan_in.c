/* A stream of three publishers from C: three publisher handles take the three lanes (a fourth
 * is MMS_ERR_BUSY), each publishes FRAMES frames of 4 uint32 (element k of frame n of lane l
 * is l * 1000000 + n * 10 + k), interleaved; a lossless subscriber gets every frame of every
 * lane once, in its lane's order, each tagged with its publisher's id and this pid. Prints
 * "ok frames=N". */
#include <unistd.h>

#include "check.h"

#define FRAMES 200
#define LANES 3

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: fan_in SOCKET\n"); return 2; }
    mms_client *c;
    CHECK(mms_connect(argv[1], &c));
    const uint64_t shape[1] = {4};
    mms_stream_options *o;
    CHECK(mms_stream_options_new("fan.c", "<u4", 1, shape, &o));
    CHECK(mms_stream_options_set(o, MMS_OPTION_MAX_PUBLISHERS, LANES));
    CHECK(mms_stream_options_set(o, MMS_OPTION_SLOTS, 8));
    CHECK(mms_create_stream_with(c, o));
    mms_stream_options_free(o);
    mms_subscriber *s;
    CHECK(mms_subscribe(c, "fan.c", true, 1, &s));
    mms_publisher *p[LANES];
    uint64_t id[LANES];
    uint32_t lane[LANES];
    for (int i = 0; i < LANES; i++) {
        CHECK(mms_publisher_open(c, "fan.c", &p[i]));
        CHECK(mms_publisher_id(p[i], &id[i], &lane[i]));
        if (lane[i] != (uint32_t)i || id[i] == 0) {
            fprintf(stderr, "publisher %d: lane %u id %llu\n", i, lane[i], (unsigned long long)id[i]);
            return 1;
        }
    }
    mms_publisher *extra;
    EXPECT(mms_publisher_open(c, "fan.c", &extra), MMS_ERR_BUSY);
    uint64_t next[LANES] = {0};
    unsigned long long received = 0;
    for (uint32_t n = 0; n < FRAMES; n++) {
        for (uint32_t l = 0; l < LANES; l++) {
            uint32_t frame[4];
            for (uint32_t k = 0; k < 4; k++) frame[k] = l * 1000000u + n * 10u + k;
            CHECK(mms_publisher_send(p[l], frame, sizeof frame, 30000, NULL));
            mms_sample *sample;
            CHECK(mms_receive(s, 30000, &sample));
            uint32_t got_lane = mms_sample_lane(sample);
            uint32_t pid = 0;
            uint64_t who = mms_sample_publisher(sample, &pid);
            const uint32_t *data = mms_sample_data(sample);
            uint64_t number = mms_sample_number(sample);
            if (got_lane >= LANES || number != next[got_lane] || who != id[got_lane]
                || pid != (uint32_t)getpid()) {
                fprintf(stderr, "lane %u frame %llu (expected %llu), publisher %llu pid %u\n",
                        got_lane, (unsigned long long)number,
                        (unsigned long long)(got_lane < LANES ? next[got_lane] : 0),
                        (unsigned long long)who, pid);
                return 1;
            }
            for (uint32_t k = 0; k < 4; k++) {
                if (data[k] != got_lane * 1000000u + (uint32_t)number * 10u + k) {
                    fprintf(stderr, "lane %u frame %llu element %u is %u\n", got_lane,
                            (unsigned long long)number, k, data[k]);
                    return 1;
                }
            }
            next[got_lane]++;
            received++;
            mms_sample_release(sample);
        }
    }
    printf("ok frames=%llu\n", received);
    for (int i = 0; i < LANES; i++) mms_publisher_free(p[i]);
    mms_subscriber_free(s);
    mms_client_free(c);
    return 0;
}
