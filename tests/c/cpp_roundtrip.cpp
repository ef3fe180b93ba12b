// The C++ wrapper (mmshare.hpp): an array written in place and read back, 100 frames through a
// stream with a lossless subscriber, a sample that outlives its Subscriber object, errors as
// exceptions with their status, and an exception inside a write or a loan.
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "mmshare.hpp"

#define REQUIRE(cond)                                                     \
    do {                                                                  \
        if (!(cond)) {                                                    \
            std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond); \
            return 1;                                                     \
        }                                                                 \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    mmshare::Client client(argv[1]);
    auto grid = client.create_array("cpp.grid", "<i4", {2, 3}, MMS_CREATE_MEMORY);
    {
        auto w = grid.begin_write();
        for (size_t i = 0; i < w.size() / 4; i++) w.as<int32_t>()[i] = int32_t(10 * i);
    }
    auto back = grid.read<int32_t>();
    REQUIRE(back.size() == 6 && back[5] == 50);
    // Regions of a striped array: a region held in place, another written and read meanwhile.
    {
        auto tiles = client.create_array("cpp.tiles", "<u4", {256, 16},
                                         MMS_CREATE_MEMORY | (4u << MMS_CREATE_STRIPES_SHIFT));
        REQUIRE(tiles.info().stripe_bytes == 64 * 16 * 4);
        auto other = client.open_array("cpp.tiles", true);
        auto held = tiles.begin_write_region({0}, {64});
        for (size_t i = 0; i < 64 * 16; i++) held.as<uint32_t>()[i] = 5;
        std::vector<uint32_t> block(2 * 16, 9), got(2 * 16);
        other.write_region({200}, {202}, block.data(), block.size() * 4);
        other.read_region({200}, {202}, got.data(), got.size() * 4);
        REQUIRE(got == block);
        held.commit();
        uint32_t two[2];
        other.read_region({63, 14}, {64, 16}, two, sizeof two);
        REQUIRE(two[0] == 5 && two[1] == 5);
        try {
            other.read_region({63, 15}, {64, 17}, two, sizeof two);
            REQUIRE(false);
        } catch (const mmshare::Error &e) {
            REQUIRE(e.status() == MMS_ERR_INVALID_ARGUMENT &&
                    std::strstr(e.what(), "15..17 on axis 1") != nullptr);
        }
    }
    REQUIRE(grid.info().version == 1);
    // An exception inside the write aborts it: the array is torn, reads say so.
    try {
        auto w = grid.begin_write();
        throw std::runtime_error("fill failed");
    } catch (const std::runtime_error &) {
    }
    try {
        grid.read<int32_t>();
        REQUIRE(false);
    } catch (const mmshare::Error &e) {
        REQUIRE(e.status() == MMS_ERR_TORN);
    }
    try {
        client.open_array("cpp.grid", false, "<f8");
        REQUIRE(false);
    } catch (const mmshare::Error &e) {
        REQUIRE(e.status() == MMS_ERR_DTYPE && std::strstr(e.what(), "holds <i4") != nullptr);
    }

    client.create_stream("cpp.frames", "<u4", {16}, 4, 0, MMS_CREATE_MEMORY);
    auto publisher = client.publisher("cpp.frames");
    auto held = [&] {
        auto sub = client.subscribe("cpp.frames", true);
        for (uint32_t n = 0; n < 100; n++) {
            publisher.publish_with([n](void *frame, size_t len) {
                auto *v = static_cast<uint32_t *>(frame);
                for (size_t k = 0; k < len / 4; k++) v[k] = n * 100 + uint32_t(k);
            });
            mmshare::Sample s = sub.receive(5000);
            if (s.number() != n || s.as<uint32_t>()[15] != n * 100 + 15) throw std::logic_error("frame");
        }
        // A loan whose fill throws is abandoned: nothing is delivered, no number is used.
        try {
            publisher.publish_with([](void *, size_t) { throw std::runtime_error("camera"); });
        } catch (const std::runtime_error &) {
        }
        publisher.publish_with([](void *frame, size_t len) { std::memset(frame, 7, len); });
        return sub.receive(5000);  // outlives `sub`
    }();
    REQUIRE(held.number() == 100 && held.missed_before() == 0);  // the abandoned loan used no number
    REQUIRE(held.as<uint8_t>()[63] == 7);
    std::printf("c++ ok\n");
    return 0;
}
