// loadgen: echo load generator on plain libuv, for bench/run.sh.
//
//   loadgen --target HOST:PORT --conns N --inflight W --size S --duration SECONDS
//           [--warmup SECONDS] [--udp] [--connect-timeout SECONDS] [--drain-timeout SECONDS]
//           [--loss-timeout-ms MS] [--framing none|length]
//           [--tls (--tls-ca FILE | --tls-insecure)] [--handshakes new|resumed]
//
// TCP: opens N connections and keeps W messages of S bytes in flight on each. Every message
// carries its sequence number and a pattern derived from it; since a TCP echo has no framing,
// the echoed byte stream is compared, byte for byte and in order, with the stream that was
// sent. A message is complete when its last byte has come back; each completion sends the next
// message, so ping-pong is --conns 1 --inflight 1.
//
// --framing length (TCP only): every message on the wire is a 4-byte big-endian length S
// followed by the S bytes of the message, the framing of a length-prefixed echo server, which
// echoes each frame with the same prefix. The echoed stream is compared with the sent stream
// byte for byte as without framing, the prefixes included; a message is complete when the last
// byte of its frame has come back. Sizes and byte counts in the output are message (payload)
// bytes; verified_bytes counts every byte checked, prefixes included. The default, none, sends
// the messages back to back without a prefix.
//
// --tls (TCP only): every connection runs TLS (OpenSSL on a BIO of its own that reads the
// socket's bytes where libuv put them and gathers what OpenSSL writes, in the same loop) and
// completes its handshake before the load starts; the checks above apply to the decrypted
// stream. --tls-ca FILE: the server's chain must verify against FILE and its certificate carry
// the target's IP address; --tls-insecure: any certificate is accepted. Connections end with
// close_notify.
//
// --handshakes new|resumed (with --tls): measures TLS handshakes instead of echoes. Each of the
// N connections in turn connects, completes a handshake, sends close_notify and closes, then
// starts again; with resumed, every connection resumes the session its previous one received
// (waiting for the ticket, which TLS 1.3 sends after the handshake) and one that is not resumed
// is an error. msgs and msgs_per_sec count handshakes completed, p50/p99/max_us time them from
// the start of the TCP connect; the line adds handshakes=new|resumed and resumed= (whole run).
//
// UDP: N sockets, W datagrams of S bytes (S >= 16) in flight on each. A datagram carries its
// sequence number, window slot and socket index and is checked in full when it returns. There
// are no retransmissions: a datagram not echoed within the loss timeout is counted as lost and
// its slot is reused for a new one.
//
// Counting starts once every connection is up and the warmup has passed, and stops after the
// duration. The generator then stops sending and waits (bounded) for what is still in flight,
// which is verified too. Output: one line of key=value pairs, e.g.
//   msgs_per_sec=123456 bytes_per_sec=7901184 conns=10 inflight=16 size=64 errors=0
//   verified_bytes=... proto=tcp duration=5.000 msgs=... total_msgs=... p50_us=... p99_us=...
//   max_us=...
// msgs_per_sec and bytes_per_sec: messages (bytes) echoed in full during the measured window,
// per second of that window (duration, measured); msgs: their count; total_msgs: messages
// echoed over the whole run, warmup and drain included; verified_bytes: every echoed byte that
// was checked, whole run; p50/p99/max_us: round-trip time of the messages completed in the
// window, from the write that sent a message to the read that completed its echo. UDP adds
// lost= (datagrams not back within the loss timeout, whole run) and late= (came back after
// that); --framing length adds framing=length. Exit status 0 only when errors=0 (losses are
// reported, not errors).
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include "bench_args.hpp"

#include <algorithm>
#include <array>
#include <bit>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace {

using bench::parse_number;
using bench::parse_target;

constexpr size_t kReadBufSize = 256 * 1024;
constexpr size_t kUdpHeader = 16;  // seq (8) + slot (4) + socket index (4)
constexpr size_t kMaxUdpSize = 65507;
constexpr size_t kLengthPrefix = 4;  // --framing length: 4-byte big-endian message length

struct Options {
    std::string target;
    int conns = 1;
    int inflight = 1;
    size_t size = 64;
    double duration = 5.0;
    double warmup = 1.0;
    bool udp = false;
    double connect_timeout = 5.0;
    double drain_timeout = 2.0;
    uint64_t loss_timeout_ms = 200;
    bool framing = false;  // --framing length
    bool tls = false;
    std::string tls_ca;         // --tls-ca FILE
    bool tls_insecure = false;  // --tls-insecure
    bool handshakes = false;    // --handshakes new|resumed: connections, not messages
    bool resume = false;        // --handshakes resumed
};

// Log-linear latency histogram: exact below 64 ns, then 32 buckets per power of two (~3%).
class Histogram {
public:
    void add(uint64_t ns) {
        counts_[index(ns)]++;
        total_++;
        if (ns > max_) max_ = ns;
    }
    uint64_t total() const { return total_; }
    uint64_t max() const { return max_; }
    // The value below which a fraction p of the samples lie (bucket midpoint), in ns.
    double percentile(double p) const {
        if (total_ == 0) return 0.0;
        uint64_t rank = static_cast<uint64_t>(p * static_cast<double>(total_));
        if (rank >= total_) rank = total_ - 1;
        uint64_t seen = 0;
        for (size_t i = 0; i < counts_.size(); i++) {
            seen += counts_[i];
            if (seen > rank) return midpoint(i);
        }
        return static_cast<double>(max_);
    }

private:
    static constexpr int kSubBits = 5;
    static constexpr uint64_t kSub = uint64_t{1} << kSubBits;
    static size_t index(uint64_t v) {
        if (v < 2 * kSub) return static_cast<size_t>(v);
        int msb = 63 - std::countl_zero(v);
        int shift = msb - kSubBits;
        return static_cast<size_t>(2 * kSub + static_cast<uint64_t>(msb - kSubBits - 1) * kSub +
                                   ((v >> shift) - kSub));
    }
    static double midpoint(size_t i) {
        if (i < 2 * kSub) return static_cast<double>(i);
        uint64_t j = i - 2 * kSub;
        int shift = static_cast<int>(j / kSub) + 1;
        uint64_t low = (j % kSub + kSub) << shift;
        return static_cast<double>(low) + static_cast<double>(uint64_t{1} << shift) / 2.0;
    }
    std::array<uint64_t, 2 * kSub + 64 * kSub> counts_{};
    uint64_t total_ = 0;
    uint64_t max_ = 0;
};

// Message `seq` of connection `conn`: the sequence number (little endian) in the first 8 bytes
// (fewer if the message is shorter), then a pattern that depends on seq, conn and position.
unsigned message_salt(uint64_t seq, uint32_t conn) {
    return static_cast<unsigned>(seq * 7 + conn * 17);
}

unsigned char message_byte(size_t j, uint64_t seq, unsigned salt) {
    if (j < 8) return static_cast<unsigned char>(seq >> (8 * j));
    return static_cast<unsigned char>(j * 131 + salt);
}

// The pattern as one table: byte j of message pattern `salt` is pattern[j + pattern_offset(salt)]
// (131 is odd, so adding the salt is shifting the position), which makes filling a memcpy and
// checking a memcmp: the generator stays cheap next to the server it measures.
std::vector<unsigned char> pattern;  // pattern[i] = i * 131 mod 256, for i < --size + 256

void make_pattern(size_t size) {
    pattern.resize(size + 256);
    for (size_t i = 0; i < pattern.size(); i++) pattern[i] = static_cast<unsigned char>(i * 131);
}

size_t pattern_offset(unsigned salt) {
    return (salt * 43u) & 255u;  // 43 * 131 = 1 (mod 256)
}

void fill_message(unsigned char* dst, size_t size, uint64_t seq, uint32_t conn) {
    const unsigned salt = message_salt(seq, conn);
    std::memcpy(dst, pattern.data() + pattern_offset(salt), size);
    for (size_t j = 0; j < 8 && j < size; j++) dst[j] = message_byte(j, seq, salt);
}

// Checks data[0, len) against bytes [from, from + len) of message `seq`. Returns the offset
// within the message of the first wrong byte, or SIZE_MAX when all match.
size_t check_message(const unsigned char* data, size_t from, size_t len, uint64_t seq,
                     uint32_t conn) {
    const unsigned salt = message_salt(seq, conn);
    size_t k = 0;
    for (; k < len && from + k < 8; k++) {
        if (data[k] != message_byte(from + k, seq, salt)) return from + k;
    }
    if (std::memcmp(data + k, pattern.data() + pattern_offset(salt) + from + k, len - k) == 0)
        return SIZE_MAX;
    for (; k < len; k++) {
        if (data[k] != message_byte(from + k, seq, salt)) return from + k;
    }
    return SIZE_MAX;
}

void put_u32(unsigned char* p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = static_cast<unsigned char>(v >> (8 * i));
}
uint32_t get_u32(const unsigned char* p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= static_cast<uint32_t>(p[i]) << (8 * i);
    return v;
}
uint64_t get_u64(const unsigned char* p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= static_cast<uint64_t>(p[i]) << (8 * i);
    return v;
}

// Datagram: fill_message, then slot and socket index in bytes 8..16.
void fill_datagram(unsigned char* dst, size_t size, uint64_t seq, uint32_t slot, uint32_t conn) {
    fill_message(dst, size, seq, conn);
    put_u32(dst + 8, slot);
    put_u32(dst + 12, conn);
}

enum class Phase { connecting, running, draining, done };

struct TcpConn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uint32_t id = 0;
    uint64_t next_send_seq = 0;     // messages sent
    uint64_t recv_seq = 0;          // messages fully echoed
    size_t recv_pos = 0;            // bytes of message recv_seq echoed so far (prefix included)
    std::vector<uint64_t> sent_at;  // send time of message seq at [seq % inflight]
    // --tls: OpenSSL reads the server's ciphertext from `in` (the current read, or `kept`: what
    // a read left unread) and writes its own into `out`, which tls_flush() sends. A BIO of
    // our own, not a pair of memory BIOs: those copy every byte once more and a reset clears
    // the whole buffer, costs the servers measured through this generator do not have to pay.
    SSL* ssl = nullptr;
    std::string_view in;
    std::string kept;
    std::string out;
    bool tls_up = false;  // the handshake has completed
    // --handshakes resumed: the session the next connection resumes, and whether this one has
    // brought a ticket (TLS 1.3 sends it after the handshake).
    SSL_SESSION* session = nullptr;
    bool got_session = false;
    uint64_t started_at = 0;  // --handshakes: when the TCP connect began
    bool closing = false;     // --handshakes: close_notify and FIN sent, waiting for the EOF
    uv_shutdown_t shutdown_req;
};

struct WriteReq {
    uv_write_t req;
    std::vector<unsigned char> data;
    uv_buf_t buf;
};

struct UdpSlot {
    uint64_t seq = 0;
    uint64_t sent_at = 0;
    bool active = false;
};

struct UdpConn {
    uv_udp_t udp;
    uint32_t id = 0;
    uint64_t next_seq = 0;
    std::vector<UdpSlot> slots;
    size_t active = 0;
};

struct UdpSendReq {
    uv_udp_send_t req;
    std::vector<unsigned char> data;
    uv_buf_t buf;
};

struct App {
    Options opt;
    uv_loop_t* loop = nullptr;
    sockaddr_storage target{};
    Phase phase = Phase::connecting;
    bool measuring = false;

    std::vector<std::unique_ptr<TcpConn>> tcp;
    std::vector<std::unique_ptr<UdpConn>> udp;
    int connected = 0;

    uv_timer_t connect_timer{};
    uv_timer_t warmup_timer{};
    uv_timer_t end_timer{};
    uv_timer_t drain_timer{};
    uv_timer_t loss_timer{};
    uv_signal_t sig_int{};
    uv_signal_t sig_term{};

    std::vector<unsigned char> send_buf;
    size_t prefix = 0;                            // bytes before each message on the wire: 0 or 4
    std::array<unsigned char, 4> prefix_bytes{};  // the length prefix (the same for every message)
    std::vector<unsigned char> expect_buf;        // one UDP datagram as it should come back
    SSL_CTX* tls_ctx = nullptr;
    std::string tls_host;  // the target's IP address, which the server's certificate must carry

    // Totals since the start, and snapshots at the start and end of the measured window.
    uint64_t completed = 0;
    uint64_t completed_bytes = 0;
    uint64_t verified_bytes = 0;
    uint64_t errors = 0;
    uint64_t lost = 0;
    uint64_t late = 0;
    uint64_t resumed = 0;  // --handshakes: handshakes that resumed a session, whole run
    uint64_t win_start_ns = 0, win_end_ns = 0;
    uint64_t win_start_msgs = 0, win_end_msgs = 0;
    uint64_t win_start_bytes = 0, win_end_bytes = 0;
    Histogram latency;
};

App app;
unsigned char read_buf[kReadBufSize];
unsigned char plain_buf[64 * 1024];  // --tls: decrypted echo

void finish();

void fail(const char* fmt, ...) {
    app.errors++;
    if (app.errors <= 5) {
        std::va_list ap;
        va_start(ap, fmt);
        std::fputs("loadgen: ", stderr);
        std::vfprintf(stderr, fmt, ap);
        std::fputc('\n', stderr);
        va_end(ap);
    }
    finish();
}

void close_walk_cb(uv_handle_t* handle, void*) {
    if (!uv_is_closing(handle)) uv_close(handle, nullptr);
}

void finish() {
    if (app.phase == Phase::done) return;
    if (app.measuring) {  // stopped early: the window ends now
        app.measuring = false;
        app.win_end_ns = uv_hrtime();
        app.win_end_msgs = app.completed;
        app.win_end_bytes = app.completed_bytes;
    }
    app.phase = Phase::done;
    for (auto& c : app.tcp) {
        if (!c->tls_up || uv_is_closing(reinterpret_cast<uv_handle_t*>(&c->tcp))) continue;
        // Best effort: the socket closes right after, and a server that reports truncation
        // should not report it for a load generator that is done.
        (void)SSL_shutdown(c->ssl);
        uv_buf_t buf = uv_buf_init(c->out.data(), static_cast<unsigned>(c->out.size()));
        if (!c->out.empty()) (void)uv_try_write(reinterpret_cast<uv_stream_t*>(&c->tcp), &buf, 1);
        c->out.clear();
    }
    uv_walk(app.loop, close_walk_cb, nullptr);
}

bool all_drained() {
    for (auto& c : app.tcp) {
        if (c->recv_seq != c->next_send_seq) return false;
    }
    for (auto& c : app.udp) {
        if (c->active != 0) return false;
    }
    return true;
}

void check_drained() {
    if (app.phase == Phase::draining && all_drained()) finish();
}

void record_completion(uint64_t sent_at, uint64_t now, size_t bytes) {
    app.completed++;
    app.completed_bytes += bytes;
    if (app.measuring) app.latency.add(now - sent_at);
}

// ------------------------------------------------------------------ TCP

void on_tcp_write(uv_write_t* req, int status) {
    delete static_cast<WriteReq*>(req->data);
    if (status < 0 && status != UV_ECANCELED) fail("write: %s", uv_strerror(status));
}

// Writes p[0, len) to the socket: what the kernel takes at once, a copy of the rest queued.
void write_out(TcpConn& c, unsigned char* p, size_t len) {
    uv_buf_t buf = uv_buf_init(reinterpret_cast<char*>(p), static_cast<unsigned>(len));
    int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&c.tcp), &buf, 1);
    if (n == UV_EAGAIN) {
        n = 0;
    } else if (n < 0) {
        fail("write on connection %u: %s", c.id, uv_strerror(n));
        return;
    }
    if (static_cast<size_t>(n) == len) return;
    auto* wr = new WriteReq;
    wr->data.assign(p + n, p + len);
    wr->buf = uv_buf_init(reinterpret_cast<char*>(wr->data.data()),
                          static_cast<unsigned>(wr->data.size()));
    wr->req.data = wr;
    int r = uv_write(&wr->req, reinterpret_cast<uv_stream_t*>(&c.tcp), &wr->buf, 1, on_tcp_write);
    if (r != 0) {
        delete wr;
        fail("write on connection %u: %s", c.id, uv_strerror(r));
    }
}

// OpenSSL's reason for the last failure on connection c (err: SSL_get_error's code).
std::string tls_error(const TcpConn& c, int err) {
    if (SSL_get_verify_result(c.ssl) != X509_V_OK) {
        return std::string("certificate verify failed (") +
               X509_verify_cert_error_string(SSL_get_verify_result(c.ssl)) + ")";
    }
    const unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (e != 0) {
        const char* reason = ERR_reason_error_string(e);
        return reason != nullptr ? reason : "error " + std::to_string(e);
    }
    return "SSL_get_error " + std::to_string(err);
}

// Writes out the ciphertext OpenSSL has produced.
void tls_flush(TcpConn& c) {
    if (c.out.empty()) return;
    write_out(c, reinterpret_cast<unsigned char*>(c.out.data()), c.out.size());
    c.out.clear();  // keeps its capacity
}

// The connection's BIO: reads never block (nothing left asks OpenSSL to retry), writes never
// fail.
struct ConnBio {
    static int write(BIO* b, const char* data, size_t len, size_t* written) {
        static_cast<TcpConn*>(BIO_get_data(b))->out.append(data, len);
        *written = len;
        return 1;
    }
    static int read(BIO* b, char* buf, size_t len, size_t* got) {
        auto* c = static_cast<TcpConn*>(BIO_get_data(b));
        BIO_clear_retry_flags(b);
        if (c->in.empty()) {
            BIO_set_retry_read(b);
            *got = 0;
            return 0;
        }
        const size_t n = std::min(len, c->in.size());
        std::memcpy(buf, c->in.data(), n);
        c->in.remove_prefix(n);
        *got = n;
        return 1;
    }
    static long ctrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }
    static int create(BIO* b) {
        BIO_set_init(b, 1);
        return 1;
    }
    static BIO_METHOD* method() {
        static BIO_METHOD* m = [] {
            BIO_METHOD* bm =
                BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "loadgen-conn");
            if (bm != nullptr) {
                BIO_meth_set_write_ex(bm, write);
                BIO_meth_set_read_ex(bm, read);
                BIO_meth_set_ctrl(bm, ctrl);
                BIO_meth_set_create(bm, create);
            }
            return bm;
        }();
        return m;
    }
};

// After OpenSSL has read what it wanted of a read: what it left (it takes all but after a
// failure) is kept for the next read, since libuv reuses the read buffer.
void tls_keep_rest(TcpConn& c) {
    std::string rest(c.in);
    c.kept.swap(rest);
    c.in = {};
}

void tcp_send(TcpConn& c, uint64_t count) {
    const size_t s = app.opt.size;
    const size_t unit = app.prefix + s;  // one message on the wire
    const size_t len = static_cast<size_t>(count) * unit;
    app.send_buf.resize(len);
    unsigned char* p = app.send_buf.data();
    const uint64_t now = uv_hrtime();
    for (uint64_t k = 0; k < count; k++) {
        unsigned char* m = p + k * unit;
        std::memcpy(m, app.prefix_bytes.data(), app.prefix);
        fill_message(m + app.prefix, s, c.next_send_seq, c.id);
        c.sent_at[c.next_send_seq % c.sent_at.size()] = now;
        c.next_send_seq++;
    }
    if (c.ssl == nullptr) {
        write_out(c, p, len);
        return;
    }
    const int n = SSL_write(c.ssl, p, static_cast<int>(len));
    if (n != static_cast<int>(len)) {
        fail("TLS write on connection %u: %s", c.id, tls_error(c, SSL_get_error(c.ssl, n)).c_str());
        return;
    }
    tls_flush(c);
}

void tcp_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
    buf->base = reinterpret_cast<char*>(read_buf);
    buf->len = sizeof(read_buf);
}

// Checks the echoed bytes data[0, left) of connection c against what it sent. Returns how many
// messages they complete (0 after a mismatch, reported: the run is then over).
uint64_t take_echo(TcpConn& c, const unsigned char* data, size_t left, uint64_t now) {
    const size_t s = app.opt.size;
    const size_t prefix = app.prefix;
    const size_t unit = prefix + s;  // one message on the wire
    uint64_t done_now = 0;
    while (left > 0) {
        if (c.recv_seq == c.next_send_seq) {
            fail("connection %u: %zu bytes echoed beyond what was sent", c.id, left);
            return 0;
        }
        const size_t take = std::min(left, unit - c.recv_pos);
        size_t k = 0;  // bytes of `take` that belong to the length prefix
        for (; k < take && c.recv_pos + k < prefix; k++) {
            if (data[k] != app.prefix_bytes[c.recv_pos + k]) {
                fail("connection %u: mismatch in the length prefix of message %llu at byte %zu",
                     c.id, static_cast<unsigned long long>(c.recv_seq), c.recv_pos + k);
                return 0;
            }
        }
        if (k < take) {
            size_t bad =
                check_message(data + k, c.recv_pos + k - prefix, take - k, c.recv_seq, c.id);
            if (bad != SIZE_MAX) {
                fail("connection %u: mismatch in message %llu at byte %zu", c.id,
                     static_cast<unsigned long long>(c.recv_seq), bad);
                return 0;
            }
        }
        app.verified_bytes += take;
        data += take;
        left -= take;
        c.recv_pos += take;
        if (c.recv_pos == unit) {
            record_completion(c.sent_at[c.recv_seq % c.sent_at.size()], now, s);
            c.recv_pos = 0;
            c.recv_seq++;
            done_now++;
        }
    }
    return done_now;
}

// After echoed messages came back: as many new ones go out, or the drain may be over.
void after_echo(TcpConn& c, uint64_t done_now) {
    if (app.phase == Phase::running && done_now > 0) {
        tcp_send(c, done_now);
    } else {
        check_drained();
    }
}

void start_load();

enum class Feed { failed, handshaking, up_now, up };

// Gives ciphertext from the server to OpenSSL and drives the handshake; up_now when this call
// completed it (the client's Finished is then sent), failed after a failure (reported).
Feed tls_feed(TcpConn& c, const char* data, size_t len) {
    if (c.kept.empty()) {
        c.in = std::string_view(data, len);
    } else {
        c.kept.append(data, len);
        c.in = c.kept;
    }
    if (c.tls_up) return Feed::up;
    const int r = SSL_do_handshake(c.ssl);
    if (r != 1) {
        const int err = SSL_get_error(c.ssl, r);
        tls_flush(c);  // the next handshake message, or the alert that says why it failed
        if (err == SSL_ERROR_WANT_READ) return Feed::handshaking;
        fail("TLS handshake on connection %u: %s", c.id, tls_error(c, err).c_str());
        return Feed::failed;
    }
    c.tls_up = true;
    tls_flush(c);
    return Feed::up_now;
}

// --tls: ciphertext from the server. Drives the handshake, then checks the decrypted echo.
void tls_on_read(TcpConn& c, const char* data, size_t len) {
    const Feed f = tls_feed(c, data, len);
    if (f == Feed::failed || f == Feed::handshaking) return;
    if (f == Feed::up_now && ++app.connected == app.opt.conns) start_load();
    const uint64_t now = uv_hrtime();
    uint64_t done_now = 0;
    for (;;) {
        const int n = SSL_read(c.ssl, plain_buf, sizeof(plain_buf));
        if (n <= 0) {
            const int err = SSL_get_error(c.ssl, n);
            if (err == SSL_ERROR_WANT_READ) break;
            fail("connection %u: %s", c.id,
                 err == SSL_ERROR_ZERO_RETURN ? "closed by the server (TLS close_notify)"
                                              : tls_error(c, err).c_str());
            return;
        }
        done_now += take_echo(c, plain_buf, static_cast<size_t>(n), now);
        if (app.phase == Phase::done) return;
    }
    tls_flush(c);  // what reading produced (a key update's answer)
    after_echo(c, done_now);
}

void on_tcp_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
    auto& c = *static_cast<TcpConn*>(stream->data);
    if (app.phase == Phase::done) return;
    if (nread < 0) {
        fail("connection %u: %s", c.id,
             nread == UV_EOF ? "closed by the server" : uv_strerror(static_cast<int>(nread)));
        return;
    }
    if (c.ssl != nullptr) {
        tls_on_read(c, buf->base, static_cast<size_t>(nread));
        tls_keep_rest(c);
        return;
    }
    const uint64_t now = uv_hrtime();
    after_echo(c, take_echo(c, reinterpret_cast<const unsigned char*>(buf->base),
                            static_cast<size_t>(nread), now));
}

// ------------------------------------------------------------------ UDP

void on_udp_sent(uv_udp_send_t* req, int status) {
    delete static_cast<UdpSendReq*>(req->data);
    if (status < 0 && status != UV_ECANCELED) fail("udp send: %s", uv_strerror(status));
}

void udp_send_one(UdpConn& c, uint32_t slot_index, uint64_t now) {
    const size_t s = app.opt.size;
    app.send_buf.resize(s);
    UdpSlot& slot = c.slots[slot_index];
    slot.seq = c.next_seq++;
    slot.sent_at = now;
    slot.active = true;
    c.active++;
    fill_datagram(app.send_buf.data(), s, slot.seq, slot_index, c.id);
    uv_buf_t buf =
        uv_buf_init(reinterpret_cast<char*>(app.send_buf.data()), static_cast<unsigned>(s));
    int r = uv_udp_try_send(&c.udp, &buf, 1, nullptr);
    if (r >= 0) return;
    if (r != UV_EAGAIN) {
        fail("udp socket %u: send: %s", c.id, uv_strerror(r));
        return;
    }
    auto* sr = new UdpSendReq;
    sr->data = app.send_buf;
    sr->buf = uv_buf_init(reinterpret_cast<char*>(sr->data.data()),
                          static_cast<unsigned>(sr->data.size()));
    sr->req.data = sr;
    r = uv_udp_send(&sr->req, &c.udp, &sr->buf, 1, nullptr, on_udp_sent);
    if (r != 0) {
        delete sr;
        fail("udp socket %u: send: %s", c.id, uv_strerror(r));
    }
}

void on_udp_recv(uv_udp_t* handle, ssize_t nread, const uv_buf_t* buf, const sockaddr* addr,
                 unsigned flags) {
    auto& c = *static_cast<UdpConn*>(handle->data);
    if (app.phase == Phase::done) return;
    if (nread < 0) {
        fail("udp socket %u: recv: %s", c.id, uv_strerror(static_cast<int>(nread)));
        return;
    }
    if (addr == nullptr) return;  // nothing more to read
    const size_t s = app.opt.size;
    const auto* data = reinterpret_cast<const unsigned char*>(buf->base);
    if ((flags & UV_UDP_PARTIAL) != 0 || static_cast<size_t>(nread) != s) {
        fail("udp socket %u: datagram of %zd bytes, expected %zu", c.id, nread, s);
        return;
    }
    const uint64_t seq = get_u64(data);
    const uint32_t slot_index = get_u32(data + 8);
    const uint32_t conn = get_u32(data + 12);
    if (conn != c.id || slot_index >= c.slots.size() || seq >= c.next_seq) {
        fail("udp socket %u: datagram with a bad header", c.id);
        return;
    }
    fill_datagram(app.expect_buf.data(), s, seq, slot_index, c.id);
    if (std::memcmp(data, app.expect_buf.data(), s) != 0) {
        fail("udp socket %u: mismatch in datagram %llu", c.id,
             static_cast<unsigned long long>(seq));
        return;
    }
    app.verified_bytes += s;
    UdpSlot& slot = c.slots[slot_index];
    if (!slot.active || slot.seq != seq) {  // came back after it was counted as lost
        app.late++;
        return;
    }
    const uint64_t now = uv_hrtime();
    slot.active = false;
    c.active--;
    record_completion(slot.sent_at, now, s);
    if (app.phase == Phase::running) {
        udp_send_one(c, slot_index, now);
    } else {
        check_drained();
    }
}

void udp_alloc(uv_handle_t*, size_t, uv_buf_t* buf) {
    buf->base = reinterpret_cast<char*>(read_buf);
    buf->len = sizeof(read_buf);
}

void on_loss_timer(uv_timer_t*) {
    const uint64_t now = uv_hrtime();
    const uint64_t limit = app.opt.loss_timeout_ms * 1000000;
    for (auto& cp : app.udp) {
        UdpConn& c = *cp;
        for (uint32_t i = 0; i < c.slots.size() && app.phase != Phase::done; i++) {
            UdpSlot& slot = c.slots[i];
            if (!slot.active || now - slot.sent_at < limit) continue;
            slot.active = false;
            c.active--;
            app.lost++;
            if (app.phase == Phase::running) udp_send_one(c, i, now);
        }
    }
    check_drained();
}

// ------------------------------------------------------------------ phases

void on_end(uv_timer_t*) {
    app.measuring = false;
    app.win_end_ns = uv_hrtime();
    app.win_end_msgs = app.completed;
    app.win_end_bytes = app.completed_bytes;
    app.phase = Phase::draining;
    if (app.opt.handshakes) {  // the handshakes under way are not waited for
        if (app.win_end_msgs == app.win_start_msgs) fail("no handshake completed in the window");
        finish();
        return;
    }
    check_drained();
}

void on_warmup_done(uv_timer_t*) {
    app.measuring = true;
    app.win_start_ns = uv_hrtime();
    app.win_start_msgs = app.completed;
    app.win_start_bytes = app.completed_bytes;
}

void on_drain_timeout(uv_timer_t*) {
    uint64_t missing = 0;
    for (auto& c : app.tcp) missing += c->next_send_seq - c->recv_seq;
    if (missing > 0) {
        fail("%llu messages still not echoed %.1f s after the end",
             static_cast<unsigned long long>(missing), app.opt.drain_timeout);
        return;
    }
    for (auto& c : app.udp) app.lost += c->active;  // cannot happen: the loss timer is shorter
    finish();
}

void hs_connect(TcpConn& c);

void start_load() {
    uv_timer_stop(&app.connect_timer);
    app.phase = Phase::running;
    const auto warmup_ms = static_cast<uint64_t>(app.opt.warmup * 1000.0);
    const auto run_ms = static_cast<uint64_t>(app.opt.duration * 1000.0);
    const auto drain_ms = static_cast<uint64_t>(app.opt.drain_timeout * 1000.0);
    uv_update_time(app.loop);
    if (warmup_ms == 0) {
        on_warmup_done(nullptr);
    } else {
        uv_timer_start(&app.warmup_timer, on_warmup_done, warmup_ms, 0);
    }
    uv_timer_start(&app.end_timer, on_end, warmup_ms + run_ms, 0);
    uv_timer_start(&app.drain_timer, on_drain_timeout, warmup_ms + run_ms + drain_ms, 0);

    const auto w = static_cast<uint64_t>(app.opt.inflight);
    for (auto& c : app.tcp) {
        if (app.phase != Phase::running) break;
        if (app.opt.handshakes) {
            hs_connect(*c);
        } else {
            tcp_send(*c, w);
        }
    }
    if (!app.udp.empty()) {
        const uint64_t now = uv_hrtime();
        uv_timer_start(&app.loss_timer, on_loss_timer, 50, 50);
        for (auto& c : app.udp) {
            for (uint32_t i = 0; i < w && app.phase == Phase::running; i++)
                udp_send_one(*c, i, now);
        }
    }
}

// The client side of connection c's TLS session; sends the ClientHello.
void tls_start(TcpConn& c) {
    c.ssl = SSL_new(app.tls_ctx);
    c.in = {};
    c.kept.clear();
    c.out.clear();
    const BIO_METHOD* method = ConnBio::method();
    BIO* bio = c.ssl != nullptr && method != nullptr ? BIO_new(method) : nullptr;
    if (bio == nullptr) {
        fail("connection %u: cannot set up TLS", c.id);
        return;
    }
    BIO_set_data(bio, &c);
    SSL_set_bio(c.ssl, bio, bio);  // one BIO both ways: the SSL takes its one reference
    SSL_set_connect_state(c.ssl);
    if (!app.opt.tls_insecure &&
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c.ssl), app.tls_host.c_str()) != 1) {
        fail("connection %u: cannot check the certificate against %s", c.id, app.tls_host.c_str());
        return;
    }
    SSL_set_app_data(c.ssl, &c);
    if (c.session != nullptr) SSL_set_session(c.ssl, c.session);
    const int r = SSL_do_handshake(c.ssl);
    const int err = SSL_get_error(c.ssl, r);
    tls_flush(c);
    if (err != SSL_ERROR_WANT_READ)
        fail("TLS handshake on connection %u: %s", c.id, tls_error(c, err).c_str());
}

int on_new_session(SSL* ssl, SSL_SESSION* session);

// The client context of --tls: TLS 1.2 or later, the server verified unless --tls-insecure.
SSL_CTX* make_tls_ctx(const Options& o) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == nullptr) return nullptr;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (o.tls_insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
    } else {
        if (SSL_CTX_load_verify_locations(ctx, o.tls_ca.c_str(), nullptr) != 1) {
            SSL_CTX_free(ctx);
            return nullptr;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    }
    if (o.resume) {
        SSL_CTX_set_session_cache_mode(ctx,
                                       SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    }
    return ctx;
}

// ------------------------------------------------------------------ --handshakes

// Every connection in a loop: TCP connect, TLS handshake (resuming the previous connection's
// session with --handshakes resumed, after waiting for its ticket), close_notify, close. A
// handshake completes a "message": msgs_per_sec counts handshakes, p50/p99 the time from the
// connect to the end of the handshake.

void hs_on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf);

void hs_on_connected(uv_connect_t* req, int status) {
    auto& c = *static_cast<TcpConn*>(req->data);
    if (app.phase == Phase::done) return;
    if (status < 0) {
        fail("connect %u: %s", c.id, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&c.tcp, 1);
    const int r = uv_read_start(reinterpret_cast<uv_stream_t*>(&c.tcp), tcp_alloc, hs_on_read);
    if (r != 0) {
        fail("read_start %u: %s", c.id, uv_strerror(r));
        return;
    }
    tls_start(c);
}

void hs_connect(TcpConn& c) {
    c.tls_up = false;
    c.got_session = false;
    c.closing = false;
    c.started_at = uv_hrtime();
    uv_tcp_init(app.loop, &c.tcp);
    c.tcp.data = &c;
    c.connect_req.data = &c;
    const int r = uv_tcp_connect(&c.connect_req, &c.tcp,
                                 reinterpret_cast<const sockaddr*>(&app.target), hs_on_connected);
    if (r != 0) fail("connect %u: %s", c.id, uv_strerror(r));
}

void hs_on_closed(uv_handle_t* handle) {
    auto& c = *static_cast<TcpConn*>(handle->data);
    SSL_free(c.ssl);  // frees its BIOs
    c.ssl = nullptr;
    c.tls_up = false;
    if (app.phase == Phase::running) hs_connect(c);
}

void hs_on_shutdown(uv_shutdown_t*, int) {}

// close_notify and FIN, then read until the server's EOF: closing with its session tickets
// unread would make the kernel reset the connection instead of closing it.
void hs_close(TcpConn& c) {
    c.closing = true;
    (void)SSL_shutdown(c.ssl);
    tls_flush(c);
    const int r =
        uv_shutdown(&c.shutdown_req, reinterpret_cast<uv_stream_t*>(&c.tcp), hs_on_shutdown);
    if (r != 0) fail("shutdown %u: %s", c.id, uv_strerror(r));
}

void hs_on_tls(TcpConn& c, const char* data, size_t len);

void hs_on_read(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
    auto& c = *static_cast<TcpConn*>(stream->data);
    if (app.phase == Phase::done) return;
    if (c.closing) {  // what the server sends after our close_notify does not matter
        if (nread < 0) uv_close(reinterpret_cast<uv_handle_t*>(&c.tcp), hs_on_closed);
        return;
    }
    if (nread < 0) {
        fail("connection %u: %s during the handshake", c.id,
             nread == UV_EOF ? "closed by the server" : uv_strerror(static_cast<int>(nread)));
        return;
    }
    hs_on_tls(c, buf->base, static_cast<size_t>(nread));
    tls_keep_rest(c);
}

// --handshakes: ciphertext from the server.
void hs_on_tls(TcpConn& c, const char* data, size_t len) {
    const Feed f = tls_feed(c, data, len);
    if (f == Feed::failed || f == Feed::handshaking) return;
    if (f == Feed::up_now) {
        record_completion(c.started_at, uv_hrtime(), 0);
        if (SSL_session_reused(c.ssl) == 1) {
            app.resumed++;
        } else if (c.session != nullptr) {
            fail("connection %u: the server did not resume the session", c.id);
            return;
        }
    }
    // Read what follows the handshake: TLS 1.3 session tickets.
    for (;;) {
        const int n = SSL_read(c.ssl, plain_buf, sizeof(plain_buf));
        if (n > 0) {
            fail("connection %u: %d bytes of data from the server", c.id, n);
            return;
        }
        const int err = SSL_get_error(c.ssl, n);
        if (err == SSL_ERROR_WANT_READ) break;
        if (err != SSL_ERROR_ZERO_RETURN) {
            fail("connection %u: %s", c.id, tls_error(c, err).c_str());
        } else if (app.opt.resume && !c.got_session) {
            fail("connection %u: closed by the server before any session ticket", c.id);
        } else {
            hs_close(c);
        }
        return;
    }
    if (!app.opt.resume || c.got_session) hs_close(c);
}

// --handshakes resumed: keeps the newest session of each connection for its next one.
int on_new_session(SSL* ssl, SSL_SESSION* session) {
    auto* c = static_cast<TcpConn*>(SSL_get_app_data(ssl));
    if (c->session != nullptr) SSL_SESSION_free(c->session);
    c->session = session;
    c->got_session = true;
    return 1;  // the reference is ours
}

void on_connected(uv_connect_t* req, int status) {
    auto& c = *static_cast<TcpConn*>(req->data);
    if (app.phase != Phase::connecting) return;
    if (status < 0) {
        fail("connect %u: %s", c.id, uv_strerror(status));
        return;
    }
    uv_tcp_nodelay(&c.tcp, 1);
    int r = uv_read_start(reinterpret_cast<uv_stream_t*>(&c.tcp), tcp_alloc, on_tcp_read);
    if (r != 0) {
        fail("read_start %u: %s", c.id, uv_strerror(r));
        return;
    }
    if (app.tls_ctx != nullptr) {  // counted as connected once its handshake completes
        tls_start(c);
        return;
    }
    if (++app.connected == app.opt.conns) start_load();
}

void on_connect_timeout(uv_timer_t*) {
    fail("only %d of %d connections up after %.1f s", app.connected, app.opt.conns,
         app.opt.connect_timeout);
}

void on_signal(uv_signal_t*, int signum) {
    fail("interrupted by signal %d", signum);
}

bool open_all() {
    const auto w = static_cast<size_t>(app.opt.inflight);
    const auto* target = reinterpret_cast<const sockaddr*>(&app.target);
    for (int i = 0; i < app.opt.conns; i++) {
        if (app.opt.udp) {
            auto c = std::make_unique<UdpConn>();
            c->id = static_cast<uint32_t>(i);
            c->slots.resize(w);
            uv_udp_init(app.loop, &c->udp);
            c->udp.data = c.get();
            int r = uv_udp_connect(&c->udp, target);
            if (r == 0) r = uv_udp_recv_start(&c->udp, udp_alloc, on_udp_recv);
            app.udp.push_back(std::move(c));
            if (r != 0) {
                fail("udp socket %d: %s", i, uv_strerror(r));
                return false;
            }
            app.connected++;
        } else if (app.opt.handshakes) {  // connected by start_load
            app.tcp.push_back(std::make_unique<TcpConn>());
            app.tcp.back()->id = static_cast<uint32_t>(i);
        } else {
            auto c = std::make_unique<TcpConn>();
            c->id = static_cast<uint32_t>(i);
            c->sent_at.resize(w);
            uv_tcp_init(app.loop, &c->tcp);
            c->tcp.data = c.get();
            c->connect_req.data = c.get();
            int r = uv_tcp_connect(&c->connect_req, &c->tcp, target, on_connected);
            app.tcp.push_back(std::move(c));
            if (r != 0) {
                fail("connect %d: %s", i, uv_strerror(r));
                return false;
            }
        }
    }
    if (app.opt.udp || app.opt.handshakes) start_load();
    return true;
}

// ------------------------------------------------------------------ CLI

int usage(const char* why) {
    std::fprintf(stderr,
                 "loadgen: %s\n"
                 "usage: loadgen --target HOST:PORT --conns N --inflight W --size S "
                 "--duration SECONDS\n"
                 "               [--warmup SECONDS] [--udp] [--connect-timeout SECONDS]\n"
                 "               [--drain-timeout SECONDS] [--loss-timeout-ms MS]\n"
                 "               [--framing none|length]\n"
                 "               [--tls (--tls-ca FILE | --tls-insecure)]"
                 " [--handshakes new|resumed]\n",
                 why);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    Options& o = app.opt;
    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--udp" || a == "--tls" || a == "--tls-insecure") {
            (a == "--udp" ? o.udp : a == "--tls" ? o.tls : o.tls_insecure) = true;
            continue;
        }
        if (i + 1 >= argc) return usage(("missing value for " + a).c_str());
        const char* v = argv[++i];
        double x = 0;
        bool ok = true;
        if (a == "--target") {
            o.target = v;
        } else if (a == "--conns") {
            ok = parse_number(v, 1, 100000, &x);
            o.conns = static_cast<int>(x);
        } else if (a == "--inflight") {
            ok = parse_number(v, 1, 1000000, &x);
            o.inflight = static_cast<int>(x);
        } else if (a == "--size") {
            ok = parse_number(v, 1, 16 * 1024 * 1024, &x);
            o.size = static_cast<size_t>(x);
        } else if (a == "--duration") {
            ok = parse_number(v, 0.001, 3600, &o.duration);
        } else if (a == "--warmup") {
            ok = parse_number(v, 0, 3600, &o.warmup);
        } else if (a == "--connect-timeout") {
            ok = parse_number(v, 0.001, 600, &o.connect_timeout);
        } else if (a == "--drain-timeout") {
            ok = parse_number(v, 0.001, 600, &o.drain_timeout);
        } else if (a == "--loss-timeout-ms") {
            ok = parse_number(v, 1, 600000, &x);
            o.loss_timeout_ms = static_cast<uint64_t>(x);
        } else if (a == "--handshakes") {
            ok = std::strcmp(v, "new") == 0 || std::strcmp(v, "resumed") == 0;
            o.handshakes = true;
            o.resume = std::strcmp(v, "resumed") == 0;
        } else if (a == "--tls-ca") {
            o.tls_ca = v;
        } else if (a == "--framing") {
            ok = std::strcmp(v, "none") == 0 || std::strcmp(v, "length") == 0;
            o.framing = std::strcmp(v, "length") == 0;
        } else {
            return usage(("unknown option " + a).c_str());
        }
        if (!ok) return usage(("bad value for " + a + ": " + v).c_str());
    }
    if (o.target.empty()) return usage("--target is required");
    if (!parse_target(o.target, &app.target)) return usage("bad --target (HOST:PORT, [V6]:PORT)");
    if (o.udp && (o.size < kUdpHeader || o.size > kMaxUdpSize)) {
        return usage("--udp needs 16 <= --size <= 65507");
    }
    if (o.udp && o.framing) return usage("--framing length applies to TCP only");
    if (o.udp && o.tls) return usage("--tls applies to TCP only");
    if (!o.tls && (o.tls_insecure || !o.tls_ca.empty()))
        return usage("--tls-ca and --tls-insecure go with --tls");
    if (o.handshakes && !o.tls) return usage("--handshakes needs --tls");
    if (o.tls && o.tls_insecure == !o.tls_ca.empty())
        return usage("--tls needs one of --tls-ca FILE and --tls-insecure");
    if (o.tls) {
        app.tls_ctx = make_tls_ctx(o);
        if (app.tls_ctx == nullptr) {
            std::fprintf(stderr, "loadgen: --tls-ca %s: cannot load it\n", o.tls_ca.c_str());
            return 2;
        }
        char host[INET6_ADDRSTRLEN] = "";
        const auto* sa = reinterpret_cast<const sockaddr*>(&app.target);
        if (sa->sa_family == AF_INET6) {
            uv_ip6_name(reinterpret_cast<const sockaddr_in6*>(sa), host, sizeof(host));
        } else {
            uv_ip4_name(reinterpret_cast<const sockaddr_in*>(sa), host, sizeof(host));
        }
        app.tls_host = host;
    }
    if (o.framing) {
        app.prefix = kLengthPrefix;
        const auto n = static_cast<uint32_t>(o.size);
        app.prefix_bytes = {static_cast<unsigned char>(n >> 24),
                            static_cast<unsigned char>(n >> 16), static_cast<unsigned char>(n >> 8),
                            static_cast<unsigned char>(n)};
    }
    if (static_cast<double>(o.inflight) * static_cast<double>(app.prefix + o.size) >
        256.0 * 1024 * 1024) {
        return usage("--inflight x --size must stay within 256 MiB");
    }
    if (o.udp) {  // a datagram is lost once the loss timeout passes: the drain must outlast it
        o.drain_timeout =
            std::max(o.drain_timeout, static_cast<double>(o.loss_timeout_ms) / 1000.0 + 0.5);
    }

    std::signal(SIGPIPE, SIG_IGN);
    app.loop = uv_default_loop();
    app.expect_buf.resize(o.size);
    make_pattern(o.size);
    uv_timer_init(app.loop, &app.connect_timer);
    uv_timer_init(app.loop, &app.warmup_timer);
    uv_timer_init(app.loop, &app.end_timer);
    uv_timer_init(app.loop, &app.drain_timer);
    uv_timer_init(app.loop, &app.loss_timer);
    uv_signal_init(app.loop, &app.sig_int);
    uv_signal_start(&app.sig_int, on_signal, SIGINT);
    uv_signal_init(app.loop, &app.sig_term);
    uv_signal_start(&app.sig_term, on_signal, SIGTERM);
    uv_timer_start(&app.connect_timer, on_connect_timeout,
                   static_cast<uint64_t>(o.connect_timeout * 1000.0), 0);

    open_all();
    uv_run(app.loop, UV_RUN_DEFAULT);
    uv_loop_close(app.loop);
    for (auto& c : app.tcp) {
        SSL_free(c->ssl);  // frees its BIOs
        SSL_SESSION_free(c->session);
    }
    SSL_CTX_free(app.tls_ctx);

    const double secs = app.win_end_ns > app.win_start_ns
                            ? static_cast<double>(app.win_end_ns - app.win_start_ns) / 1e9
                            : 0.0;
    const uint64_t msgs = app.win_end_msgs - app.win_start_msgs;
    const uint64_t bytes = app.win_end_bytes - app.win_start_bytes;
    const double mps = secs > 0 ? static_cast<double>(msgs) / secs : 0.0;
    const double bps = secs > 0 ? static_cast<double>(bytes) / secs : 0.0;
    std::printf(
        "msgs_per_sec=%.0f bytes_per_sec=%.0f conns=%d inflight=%d size=%zu errors=%llu "
        "verified_bytes=%llu proto=%s duration=%.3f msgs=%llu total_msgs=%llu p50_us=%.1f "
        "p99_us=%.1f max_us=%.1f",
        mps, bps, o.conns, o.inflight, o.size, static_cast<unsigned long long>(app.errors),
        static_cast<unsigned long long>(app.verified_bytes), o.udp ? "udp" : "tcp", secs,
        static_cast<unsigned long long>(msgs), static_cast<unsigned long long>(app.completed),
        app.latency.percentile(0.50) / 1e3, app.latency.percentile(0.99) / 1e3,
        static_cast<double>(app.latency.max()) / 1e3);
    if (o.udp) {
        std::printf(" lost=%llu late=%llu", static_cast<unsigned long long>(app.lost),
                    static_cast<unsigned long long>(app.late));
    }
    if (o.framing) std::printf(" framing=length");
    if (o.tls) std::printf(" tls=1");
    if (o.handshakes) {
        std::printf(" handshakes=%s resumed=%llu", o.resume ? "resumed" : "new",
                    static_cast<unsigned long long>(app.resumed));
    }
    std::printf("\n");
    std::fflush(stdout);
    return app.errors == 0 ? 0 : 1;
}
