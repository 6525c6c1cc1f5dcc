// packet_loadgen: request load generator for the packet protocol (cs.packetstream's wire
// format, docs/packets.md) on plain libuv, for bench/run.sh. It never uses pipeworks, so it
// loads a packet server the way loadgen loads an echo server.
//
//   packet_loadgen --target HOST:PORT --conns N --inflight W --size S --duration SECONDS
//                  [--warmup SECONDS] [--drain-timeout SECONDS]
//
// Opens N connections and keeps W echo requests (API type 0, wire rq_type 1, channel 0,
// flags 0) of S payload bytes outstanding on each. Every response is checked: an ok response
// with flags 0 for a request still outstanding, carrying that request's payload (a pattern
// derived from its tag and connection). Each response sends the next request; the requests
// made while reading one batch of responses leave in one write, as a pipelining client's would.
// After the duration it stops sending, waits (bounded) for what is outstanding, then shuts
// every connection down in order: ERQ and EOF, then the server's EOF.
//
// Output, one line, the fields of loadgen's where they mean the same:
//   msgs_per_sec=... bytes_per_sec=... conns=N inflight=W size=S errors=0 proto=packet
//   duration=... msgs=... total_msgs=... p50_us=... p99_us=... max_us=...
// msgs: responses received in the measured window; total_msgs: over the whole run; latencies
// from the write of a request to the read that completed its response. Exit status 0 only
// when errors=0.
#include <uv.h>

#include "bench_args.hpp"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace {

struct Options {
    std::string target;
    int conns = 1;
    int inflight = 1;
    size_t size = 64;
    double duration = 5.0;
    double warmup = 1.0;
    double drain_timeout = 2.0;
};

enum class Phase { connecting, running, draining, closing };

struct Conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uint32_t id = 0;
    uint64_t next_tag = 2;               // channel 0: tags 0 and 1 are EOF and ERQ
    std::vector<uint64_t> slot_tag;      // the tag outstanding in each slot (tag % inflight)
    std::vector<uint64_t> slot_sent_at;  // its send time (ns), 0: free
    int outstanding = 0;
    std::string in;   // bytes of a response not yet whole
    std::string out;  // requests made while reading, written after the read
    bool eof_sent = false;
    bool closed = false;
};

struct WriteReq {
    uv_write_t req;
    std::string data;
    uv_buf_t buf;
};

struct App {
    Options o;
    uv_loop_t* loop = nullptr;
    std::vector<Conn*> conns;
    Phase phase = Phase::connecting;
    int connected = 0;
    int open = 0;
    uint64_t errors = 0;
    uint64_t total = 0, window_msgs = 0;
    uint64_t start_ns = 0, end_ns = 0;
    bool measuring = false;
    std::vector<uint32_t> lat_ns;  // latencies in the window (saturated at 4 s)
    uv_timer_t timer;
};

App app;

void fail(const char* what, const char* detail) {
    if (app.errors++ < 5) std::fprintf(stderr, "packet_loadgen: %s: %s\n", what, detail);
}

void put_bsuint(uint64_t v, std::string& out) {
    char buf[10];
    int n = 0;
    do {
        buf[n++] = static_cast<char>(v & 0x7f);
        v >>= 7;
    } while (v != 0);
    while (n-- > 0) out.push_back(static_cast<char>(buf[n] | (n > 0 ? 0x80 : 0)));
}

// Reads a BSUInt at in[pos]; false when the bytes end inside it (or it is too long: *bad).
bool get_bsuint(std::string_view in, size_t& pos, uint64_t& v, bool& bad) {
    v = 0;
    for (size_t i = 0; i < 10; ++i) {
        if (pos + i >= in.size()) return false;
        const auto b = static_cast<unsigned char>(in[pos + i]);
        v = (v << 7) | (b & 0x7f);
        if ((b & 0x80) == 0) {
            pos += i + 1;
            return true;
        }
    }
    bad = true;
    return false;
}

unsigned char payload_byte(size_t j, uint64_t tag, uint32_t conn) {
    return static_cast<unsigned char>(j * 131 + tag * 7 + conn * 17);
}

void add_request(Conn& c) {
    const uint64_t tag = c.next_tag++;
    const size_t slot = tag % static_cast<uint64_t>(app.o.inflight);
    if (c.slot_sent_at[slot] != 0) {
        fail("internal", "slot still in use");
        return;
    }
    c.slot_tag[slot] = tag;
    c.slot_sent_at[slot] = uv_hrtime();
    ++c.outstanding;
    std::string body_head;
    put_bsuint(tag, body_head);
    body_head.push_back(0x02);  // F: request, no channel, flags 0
    body_head.push_back(0x01);  // wire rq_type 1: API type 0, the echo
    put_bsuint(body_head.size() + app.o.size, c.out);
    c.out += body_head;
    const size_t at = c.out.size();
    c.out.resize(at + app.o.size);
    for (size_t j = 0; j < app.o.size; ++j)
        c.out[at + j] = static_cast<char>(payload_byte(j, tag, c.id));
}

void on_write(uv_write_t* req, int status) {
    auto* wr = static_cast<WriteReq*>(req->data);
    if (status != 0 && status != UV_ECANCELED) fail("write", uv_strerror(status));
    delete wr;
}

void flush(Conn& c) {
    if (c.out.empty() || c.closed) return;
    uv_buf_t b = uv_buf_init(c.out.data(), static_cast<unsigned>(c.out.size()));
    int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&c.tcp), &b, 1);
    if (n == static_cast<int>(c.out.size())) {
        c.out.clear();
        return;
    }
    if (n < 0 && n != UV_EAGAIN) {
        fail("write", uv_strerror(n));
        c.out.clear();
        return;
    }
    auto* wr = new WriteReq;
    wr->data = c.out.substr(n > 0 ? static_cast<size_t>(n) : 0);
    c.out.clear();
    wr->buf = uv_buf_init(wr->data.data(), static_cast<unsigned>(wr->data.size()));
    wr->req.data = wr;
    int r = uv_write(&wr->req, reinterpret_cast<uv_stream_t*>(&c.tcp), &wr->buf, 1, on_write);
    if (r != 0) {
        fail("write", uv_strerror(r));
        delete wr;
    }
}

void close_conn(Conn& c) {
    if (c.closed) return;
    c.closed = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&c.tcp), [](uv_handle_t*) {
        if (--app.open == 0) uv_stop(app.loop);
    });
}

void send_eof(Conn& c) {
    if (c.eof_sent) return;
    c.eof_sent = true;
    c.out.append("\x03\x01\x02\x00\x03\x00\x02\x00", 8);  // ERQ, EOF
    flush(c);
}

// One whole body: an ok response to one of our requests, with its payload.
void on_body(Conn& c, std::string_view body) {
    size_t pos = 0;
    uint64_t tag = 0, f = 0;
    bool bad = false;
    if (!get_bsuint(body, pos, tag, bad) || !get_bsuint(body, pos, f, bad)) {
        fail("response", "truncated header");
        return;
    }
    if (f & 2) {
        if (tag == 0 && f == 2) return;  // the server's EOF: it closes next
        if (tag == 1 && f == 2) return;  // its ERQ
        fail("response", "the server sent a request");
        return;
    }
    if (f != 4) {
        fail("response", "not an ok response with flags 0 on channel 0");
        return;
    }
    const size_t slot = tag % static_cast<uint64_t>(app.o.inflight);
    if (c.slot_sent_at[slot] == 0 || c.slot_tag[slot] != tag) {
        fail("response", "for no outstanding request");
        return;
    }
    const std::string_view payload = body.substr(pos);
    bool same = payload.size() == app.o.size;
    for (size_t j = 0; same && j < payload.size(); ++j)
        same = static_cast<unsigned char>(payload[j]) == payload_byte(j, tag, c.id);
    if (!same) fail("response", "payload differs from the request's");
    const uint64_t now = uv_hrtime();
    if (app.measuring) {
        ++app.window_msgs;
        const uint64_t d = now - c.slot_sent_at[slot];
        app.lat_ns.push_back(static_cast<uint32_t>(std::min<uint64_t>(d, 4'000'000'000u)));
    }
    ++app.total;
    c.slot_sent_at[slot] = 0;
    --c.outstanding;
    if (app.phase == Phase::running) add_request(c);
}

void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
    Conn& c = *static_cast<Conn*>(s->data);
    if (nread < 0) {
        if (nread != UV_EOF || !c.eof_sent) fail("read", uv_strerror(static_cast<int>(nread)));
        free(buf->base);
        close_conn(c);
        return;
    }
    std::string_view data(buf->base, static_cast<size_t>(nread));
    // Whole packets are parsed in the read buffer; a tail waits in c.in.
    std::string joined;
    if (!c.in.empty()) {
        c.in.append(data);
        joined.swap(c.in);
        data = joined;
    }
    size_t pos = 0;
    while (pos < data.size()) {
        size_t p = pos;
        uint64_t len = 0;
        bool bad = false;
        if (!get_bsuint(data, p, len, bad)) {
            if (bad) fail("response", "length longer than 10 bytes");
            break;
        }
        if (data.size() - p < len) break;
        on_body(c, data.substr(p, len));
        pos = p + len;
    }
    c.in.assign(data.substr(pos));
    free(buf->base);
    flush(c);
    if (app.phase == Phase::draining && c.outstanding == 0) send_eof(c);
}

void start_running();

void on_connect(uv_connect_t* req, int status) {
    Conn& c = *static_cast<Conn*>(req->data);
    if (status != 0) {
        fail("connect", uv_strerror(status));
        close_conn(c);
        return;
    }
    uv_tcp_nodelay(&c.tcp, 1);
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&c.tcp),
        [](uv_handle_t*, size_t, uv_buf_t* b) {
            b->base = static_cast<char*>(malloc(256 * 1024));
            b->len = b->base ? 256 * 1024 : 0;
        },
        on_read);
    if (++app.connected == app.o.conns) start_running();
}

uint64_t ms(double seconds) {
    return static_cast<uint64_t>(seconds * 1000.0);
}

void on_drained(uv_timer_t*) {
    // Drain timeout: whatever is outstanding now is lost.
    for (Conn* c : app.conns) {
        if (c->outstanding > 0) fail("drain", "responses still outstanding after the timeout");
        send_eof(*c);
    }
    uv_timer_start(
        &app.timer,
        [](uv_timer_t*) {
            for (Conn* c : app.conns) close_conn(*c);
        },
        ms(app.o.drain_timeout), 0);
}

void on_window_end(uv_timer_t*) {
    app.measuring = false;
    app.end_ns = uv_hrtime();
    app.phase = Phase::draining;
    for (Conn* c : app.conns)
        if (c->outstanding == 0) send_eof(*c);
    uv_timer_start(&app.timer, on_drained, ms(app.o.drain_timeout), 0);
}

void start_running() {
    app.phase = Phase::running;
    for (Conn* c : app.conns) {
        for (int i = 0; i < app.o.inflight; ++i) add_request(*c);
        flush(*c);
    }
    uv_timer_start(
        &app.timer,
        [](uv_timer_t*) {
            app.measuring = true;
            app.start_ns = uv_hrtime();
            uv_timer_start(&app.timer, on_window_end, ms(app.o.duration), 0);
        },
        ms(app.o.warmup), 0);
}

int usage(const char* why) {
    std::fprintf(stderr,
                 "packet_loadgen: %s\n"
                 "usage: packet_loadgen --target HOST:PORT --conns N --inflight W --size S "
                 "--duration SECONDS [--warmup SECONDS] [--drain-timeout SECONDS]\n",
                 why);
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    Options& o = app.o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (i + 1 >= argc) return usage(("missing value for " + a).c_str());
        const char* v = argv[++i];
        double x = 0;
        bool ok = true;
        if (a == "--target") {
            o.target = v;
        } else if (a == "--conns") {
            ok = bench::parse_number(v, 1, 100000, &x);
            o.conns = static_cast<int>(x);
        } else if (a == "--inflight") {
            ok = bench::parse_number(v, 1, 1000000, &x);
            o.inflight = static_cast<int>(x);
        } else if (a == "--size") {
            ok = bench::parse_number(v, 0, 16 * 1024 * 1024, &x);
            o.size = static_cast<size_t>(x);
        } else if (a == "--duration") {
            ok = bench::parse_number(v, 0.001, 3600, &o.duration);
        } else if (a == "--warmup") {
            ok = bench::parse_number(v, 0, 3600, &o.warmup);
        } else if (a == "--drain-timeout") {
            ok = bench::parse_number(v, 0, 3600, &o.drain_timeout);
        } else {
            return usage(("unknown argument: " + a).c_str());
        }
        if (!ok) return usage(("bad value for " + a + ": " + v).c_str());
    }
    if (o.target.empty() || o.conns < 1 || o.inflight < 1 || o.duration <= 0)
        return usage("--target, --conns >= 1, --inflight >= 1 and --duration > 0 are needed");
    sockaddr_storage addr{};
    if (!bench::parse_target(o.target, &addr))
        return usage("--target: expected HOST:PORT with a numeric IPv4 or [IPv6] address");

    app.loop = uv_default_loop();
    uv_timer_init(app.loop, &app.timer);
    for (int i = 0; i < o.conns; ++i) {
        auto* c = new Conn;
        c->id = static_cast<uint32_t>(i);
        c->slot_tag.assign(static_cast<size_t>(o.inflight), 0);
        c->slot_sent_at.assign(static_cast<size_t>(o.inflight), 0);
        uv_tcp_init(app.loop, &c->tcp);
        c->tcp.data = c;
        c->connect_req.data = c;
        ++app.open;
        int r = uv_tcp_connect(&c->connect_req, &c->tcp, reinterpret_cast<sockaddr*>(&addr),
                               on_connect);
        if (r != 0) {
            fail("connect", uv_strerror(r));
            close_conn(*c);
        }
        app.conns.push_back(c);
    }
    uv_run(app.loop, UV_RUN_DEFAULT);
    uv_close(reinterpret_cast<uv_handle_t*>(&app.timer), nullptr);
    uv_run(app.loop, UV_RUN_DEFAULT);

    const double secs =
        app.end_ns > app.start_ns ? static_cast<double>(app.end_ns - app.start_ns) / 1e9 : 0.0;
    const double mps = secs > 0 ? static_cast<double>(app.window_msgs) / secs : 0.0;
    auto pct = [](double p) -> double {
        if (app.lat_ns.empty()) return 0.0;
        size_t k = static_cast<size_t>(p * static_cast<double>(app.lat_ns.size() - 1));
        std::nth_element(app.lat_ns.begin(), app.lat_ns.begin() + static_cast<long>(k),
                         app.lat_ns.end());
        return app.lat_ns[k] / 1000.0;
    };
    const double p50 = pct(0.50), p99 = pct(0.99);
    const double mx =
        app.lat_ns.empty() ? 0.0 : *std::max_element(app.lat_ns.begin(), app.lat_ns.end()) / 1e3;
    std::printf(
        "msgs_per_sec=%.1f bytes_per_sec=%.1f conns=%d inflight=%d size=%zu errors=%llu "
        "proto=packet duration=%.3f msgs=%llu total_msgs=%llu p50_us=%.1f p99_us=%.1f "
        "max_us=%.1f\n",
        mps, mps * static_cast<double>(o.size), o.conns, o.inflight, o.size,
        static_cast<unsigned long long>(app.errors), secs,
        static_cast<unsigned long long>(app.window_msgs),
        static_cast<unsigned long long>(app.total), p50, p99, mx);
    for (Conn* c : app.conns) delete c;
    return app.errors == 0 ? 0 : 1;
}
