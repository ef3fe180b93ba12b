// mmshare for C++17: RAII owners over the C API in mmshare.h (header-only; link -lmmshare_c).
//
// Every failing call throws mmshare::Error, which carries the MMS_* status and the library's
// one-line message. Handles close when their owner goes; a Sample releases its frame when it
// goes (it keeps its subscriber alive, so it may outlive the Subscriber object).
//
//   mmshare::Client client;                                   // the default socket
//   auto frame = client.create_array("frame", "<f4", {480, 640}, MMS_CREATE_MEMORY);
//   { auto w = frame.begin_write(); std::fill_n(w.as<float>(), w.size() / 4, 1.0f); }
//   auto sub = client.subscribe("camera", /*lossless=*/true);
//   mmshare::Sample s = sub.receive(1000);                    // ms; throws on timeout
//   const uint8_t *px = s.as<uint8_t>();
#ifndef MMSHARE_HPP
#define MMSHARE_HPP

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mmshare.h"

namespace mmshare {

/// A failed call: `status()` is the MMS_* code, `what()` the message.
class Error : public std::runtime_error {
public:
    Error(int status, const char *message)
        : std::runtime_error(std::string(mms_status_name(status)) + ": " + message),
          status_(status) {}
    int status() const noexcept { return status_; }

private:
    int status_;
};

namespace detail {
inline void check(int status) {
    if (status != MMS_OK) throw Error(status, mms_last_error());
}

/// A move-only owner of a C handle, freed by `Free`.
template <typename T, void (*Free)(T *)>
class Owner {
public:
    Owner() = default;
    explicit Owner(T *p) noexcept : p_(p) {}
    Owner(Owner &&o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
    Owner &operator=(Owner &&o) noexcept {
        if (this != &o) reset(std::exchange(o.p_, nullptr));
        return *this;
    }
    Owner(const Owner &) = delete;
    Owner &operator=(const Owner &) = delete;
    ~Owner() { reset(nullptr); }
    T *get() const noexcept { return p_; }
    void reset(T *p) noexcept {
        if (p_) Free(p_);
        p_ = p;
    }

private:
    T *p_ = nullptr;
};
}  // namespace detail

/// A consistent write in place: the data while it lives; committed when it goes (or by
/// `commit()`), aborted (the array marked torn) if an exception is unwinding then.
class WriteGuard {
public:
    explicit WriteGuard(mms_array *a) : a_(a), uncaught_(std::uncaught_exceptions()) {
        detail::check(mms_array_begin_write(a_, &data_, &len_));
    }
    /// A write of a region only (`Region`): `data()` is still the array's first byte; write
    /// inside the region only.
    WriteGuard(mms_array *a, const std::vector<uint64_t> &starts, const std::vector<uint64_t> &ends)
        : a_(a), uncaught_(std::uncaught_exceptions()) {
        detail::check(mms_array_begin_write_region(a_, region_len(starts, ends), starts.data(),
                                                   ends.data(), &data_, &len_));
    }
    static uint32_t region_len(const std::vector<uint64_t> &starts,
                               const std::vector<uint64_t> &ends) {
        if (starts.size() != ends.size())
            throw Error(MMS_ERR_INVALID_ARGUMENT, "a region needs as many starts as ends");
        return static_cast<uint32_t>(starts.size());
    }
    WriteGuard(WriteGuard &&o) noexcept
        : a_(std::exchange(o.a_, nullptr)), data_(o.data_), len_(o.len_), uncaught_(o.uncaught_) {}
    WriteGuard(const WriteGuard &) = delete;
    WriteGuard &operator=(const WriteGuard &) = delete;
    WriteGuard &operator=(WriteGuard &&) = delete;
    ~WriteGuard() {
        if (!a_) return;
        if (std::uncaught_exceptions() > uncaught_) {
            mms_array_abort(a_);
        } else {
            mms_array_commit(a_, nullptr);
        }
    }
    /// Publishes the write; returns the new version.
    uint64_t commit() {
        uint64_t v = 0;
        detail::check(mms_array_commit(std::exchange(a_, nullptr), &v));
        return v;
    }
    void *data() const noexcept { return data_; }
    size_t size() const noexcept { return len_; }
    template <typename E>
    E *as() const noexcept { return static_cast<E *>(data_); }

private:
    mms_array *a_;
    void *data_ = nullptr;
    size_t len_ = 0;
    int uncaught_;
};

/// An array mapped into this process.
class Array {
public:
    explicit Array(mms_array *a) : a_(a) {}
    mms_info info() const {
        mms_info i;
        detail::check(mms_array_info(a_.get(), &i));
        return i;
    }
    /// A consistent copy into `dst` (`len` = the array's bytes); returns its version.
    uint64_t read(void *dst, size_t len) const {
        uint64_t v = 0;
        detail::check(mms_array_read(a_.get(), dst, len, &v));
        return v;
    }
    template <typename E>
    std::vector<E> read() const {
        std::vector<E> out(info().data_len / sizeof(E));
        read(out.data(), out.size() * sizeof(E));
        return out;
    }
    uint64_t write(const void *src, size_t len) {
        uint64_t v = 0;
        detail::check(mms_array_write(a_.get(), src, len, &v));
        return v;
    }
    WriteGuard begin_write() { return WriteGuard(a_.get()); }
    /// A region: rows `starts[k]..ends[k]` of each leading axis `k` (the rest whole). Its
    /// copy (elements in the array's memory order, `len` = its bytes); returns its version. In
    /// an array with stripes only the region's stripes are validated.
    uint64_t read_region(const std::vector<uint64_t> &starts, const std::vector<uint64_t> &ends,
                         void *dst, size_t len) const {
        uint64_t v = 0;
        detail::check(mms_array_read_region(a_.get(), WriteGuard::region_len(starts, ends),
                                            starts.data(), ends.data(), dst, len, &v));
        return v;
    }
    /// Writes a region from `src` (its elements in memory order); returns the new version.
    /// In an array with stripes only the region's stripes are taken.
    uint64_t write_region(const std::vector<uint64_t> &starts, const std::vector<uint64_t> &ends,
                          const void *src, size_t len) {
        uint64_t v = 0;
        detail::check(mms_array_write_region(a_.get(), WriteGuard::region_len(starts, ends),
                                             starts.data(), ends.data(), src, len, &v));
        return v;
    }
    /// A write in place of a region only.
    WriteGuard begin_write_region(const std::vector<uint64_t> &starts,
                                  const std::vector<uint64_t> &ends) {
        return WriteGuard(a_.get(), starts, ends);
    }
    /// Waits (at most `timeout_ms`; negative: no limit) for a version above `newer_than`.
    uint64_t wait(uint64_t newer_than, int64_t timeout_ms) const {
        uint64_t v = 0;
        detail::check(mms_array_wait(a_.get(), newer_than, timeout_ms, &v));
        return v;
    }
    mms_array *handle() const noexcept { return a_.get(); }

private:
    detail::Owner<mms_array, mms_array_free> a_;
};

/// A received frame, released when it goes.
class Sample {
public:
    explicit Sample(mms_sample *s) : s_(s) {}
    const void *data() const noexcept { return mms_sample_data(s_.get()); }
    size_t size() const noexcept { return mms_sample_len(s_.get()); }
    uint64_t number() const noexcept { return mms_sample_number(s_.get()); }
    uint64_t missed_before() const noexcept { return mms_sample_missed_before(s_.get()); }
    uint64_t published_ns() const noexcept { return mms_sample_published_ns(s_.get()); }
    template <typename E>
    const E *as() const noexcept { return static_cast<const E *>(data()); }

private:
    detail::Owner<mms_sample, mms_sample_release> s_;
};

/// The receiving side of a stream.
class Subscriber {
public:
    explicit Subscriber(mms_subscriber *s) : s_(s) {}
    /// The next frame, waiting at most `timeout_ms` (negative: no limit); throws
    /// Error(MMS_ERR_TIMEOUT) when none comes.
    Sample receive(int64_t timeout_ms) {
        mms_sample *s = nullptr;
        detail::check(mms_receive(s_.get(), timeout_ms, &s));
        return Sample(s);
    }
    uint64_t missed() const {
        uint64_t n = 0;
        detail::check(mms_subscriber_missed(s_.get(), &n));
        return n;
    }

private:
    detail::Owner<mms_subscriber, mms_subscriber_free> s_;
};

/// The publishing side of a stream.
class Publisher {
public:
    explicit Publisher(mms_publisher *p) : p_(p) {}
    /// Copies one whole frame in and publishes it; returns its number.
    uint64_t send(const void *src, size_t len, int64_t timeout_ms = -1) {
        uint64_t n = 0;
        detail::check(mms_publisher_send(p_.get(), src, len, timeout_ms, &n));
        return n;
    }
    /// Loans a slot, fills it with `fill(void *frame, size_t len)`, publishes it (abandons it
    /// if `fill` throws); returns the frame's number.
    template <typename Fill>
    uint64_t publish_with(Fill &&fill, int64_t timeout_ms = -1) {
        void *frame = nullptr;
        size_t len = 0;
        detail::check(mms_publisher_loan(p_.get(), timeout_ms, &frame, &len, nullptr));
        try {
            fill(frame, len);
        } catch (...) {
            mms_publisher_abandon(p_.get());
            throw;
        }
        uint64_t n = 0;
        detail::check(mms_publisher_publish(p_.get(), &n));
        return n;
    }

private:
    detail::Owner<mms_publisher, mms_publisher_free> p_;
};

/// A connection to the daemon.
class Client {
public:
    /// The default socket ($MMSHARE_SOCKET, ...), or `socket_path`.
    explicit Client(const char *socket_path = nullptr) {
        mms_client *c = nullptr;
        detail::check(mms_connect(socket_path, &c));
        c_.reset(c);
    }
    /// A daemon that must run as `server_uid` or root (MMS_ERR_WRONG_SERVER otherwise).
    Client(const char *socket_path, uint32_t server_uid) {
        mms_client *c = nullptr;
        detail::check(mms_connect_as(socket_path, server_uid, &c));
        c_.reset(c);
    }
    Array create_array(const char *name, const char *dtype, std::initializer_list<uint64_t> shape,
                       uint32_t flags = 0, uint32_t mode = 0) {
        std::vector<uint64_t> dims(shape);
        mms_array *a = nullptr;
        detail::check(mms_create_array(c_.get(), name, dtype, static_cast<uint32_t>(dims.size()),
                                       dims.data(), flags, mode, &a));
        return Array(a);
    }
    Array open_array(const char *name, bool writable = false, const char *dtype = nullptr) {
        mms_array *a = nullptr;
        detail::check(mms_open_array(c_.get(), name, dtype, writable, &a));
        return Array(a);
    }
    void create_stream(const char *name, const char *dtype, std::initializer_list<uint64_t> shape,
                       uint32_t slots = 0, uint32_t max_subscribers = 0, uint32_t flags = 0,
                       uint32_t mode = 0) {
        std::vector<uint64_t> dims(shape);
        detail::check(mms_create_stream(c_.get(), name, dtype, static_cast<uint32_t>(dims.size()),
                                        dims.data(), slots, max_subscribers, flags, mode));
    }
    Publisher publisher(const char *name) {
        mms_publisher *p = nullptr;
        detail::check(mms_publisher_open(c_.get(), name, &p));
        return Publisher(p);
    }
    Subscriber subscribe(const char *name, bool lossless, uint32_t max_held = 0) {
        mms_subscriber *s = nullptr;
        detail::check(mms_subscribe(c_.get(), name, lossless, max_held, &s));
        return Subscriber(s);
    }
    mms_info stat(const char *name) {
        mms_info i;
        detail::check(mms_stat(c_.get(), name, &i));
        return i;
    }
    void remove(const char *name) { detail::check(mms_delete(c_.get(), name)); }

private:
    detail::Owner<mms_client, mms_client_free> c_;
};

}  // namespace mmshare

#endif  // MMSHARE_HPP
