// sync_client HOST:PORT [--count N] [--size BYTES] [--framing raw|length] [--threads T]
// A blocking client of echo_server (examples/echo_server.cpp), written with pipeworks::sync on
// plain threads: no loop, no callbacks. Each of T threads (default 1) opens its own connection,
// sends N messages (default 100) of BYTES bytes (default 64) one at a time and reads each echo
// back before the next. --framing must match the server's: length (4-byte big-endian prefix)
// gets one message per echo; raw (the default) reads until as many bytes came back as were
// sent. Prints "N round trips in MS ms" and exits 0 only if every echo matched.
#include <pipeworks/sync.hpp>

#include "version_flag.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace pipeworks;
using namespace std::chrono_literals;

namespace {

int usage(const char* why) {
    std::fprintf(stderr,
                 "sync_client: %s\n"
                 "usage: sync_client HOST:PORT [--count N] [--size BYTES] "
                 "[--framing raw|length] [--threads T]\n",
                 why);
    return 2;
}

bool number(const char* s, unsigned long& out) {
    char* end = nullptr;
    out = std::strtoul(s, &end, 10);
    return end != s && *end == '\0' && s[0] != '-';
}

// One connection's round trips; an empty string when all matched, else what went wrong.
std::string run_client(const std::string& target, const NetConf& conf, unsigned long count,
                       unsigned long size, unsigned id) {
    auto pipe = sync::Pipe::connect(target, conf);
    if (!pipe) return "connect: " + pipe.error().message;
    const bool framed = conf.framer.kind != FramerKind::raw;
    for (unsigned long i = 0; i < count; ++i) {
        std::string msg(size, '\0');
        for (unsigned long k = 0; k < size; ++k)
            msg[k] = static_cast<char>('a' + (i + k + id) % 26);
        if (Error e = pipe->send(msg)) return "send: " + e.message;
        std::string back;
        // Raw TCP may return an echo in pieces; a framed one comes whole.
        while (back.size() < msg.size()) {
            RecvResult r = pipe->recv(5s);
            if (r.status == RecvResult::Status::timeout) return "no echo within 5 s";
            if (!r) return "the connection ended: " + r.end.error.message;
            back += r.message.data;
            if (framed) break;
        }
        if (back != msg) return "echo " + std::to_string(i) + " differs";
    }
    auto end = pipe->close();
    if (!end) return "close: " + end.error().message;
    if (end->unsent_bytes != 0) return std::to_string(end->unsent_bytes) + " bytes never sent";
    return {};
}

}  // namespace

int main(int argc, char** argv) {
    if (print_version(argc, argv)) return 0;
    if (argc < 2) return usage("HOST:PORT missing");
    std::string target = argv[1];
    unsigned long count = 100, size = 64, threads = 1;
    NetConf conf;
    for (int i = 2; i < argc; ++i) {
        const char* a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : nullptr;
        if (!v) return usage((std::string(a) + " needs a value").c_str());
        ++i;
        if (std::strcmp(a, "--count") == 0) {
            if (!number(v, count)) return usage("--count: not a number");
        } else if (std::strcmp(a, "--size") == 0) {
            if (!number(v, size) || size == 0) return usage("--size: a number above 0");
        } else if (std::strcmp(a, "--threads") == 0) {
            if (!number(v, threads) || threads == 0 || threads > 1024)
                return usage("--threads: 1 to 1024");
        } else if (std::strcmp(a, "--framing") == 0) {
            if (std::strcmp(v, "length") == 0)
                conf.framer = Framer::message();
            else if (std::strcmp(v, "raw") != 0)
                return usage("--framing: raw or length");
        } else {
            return usage((std::string("unknown option ") + a).c_str());
        }
    }
    std::vector<std::string> errors(threads);
    std::vector<std::thread> pool;
    const auto t0 = std::chrono::steady_clock::now();
    for (unsigned t = 0; t < threads; ++t)
        pool.emplace_back([&, t] { errors[t] = run_client(target, conf, count, size, t); });
    for (auto& th : pool) th.join();
    const auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    int failed = 0;
    for (unsigned t = 0; t < threads; ++t) {
        if (errors[t].empty()) continue;
        ++failed;
        std::fprintf(stderr, "sync_client: connection %u: %s\n", t, errors[t].c_str());
    }
    std::printf("%lu round trips in %lld ms\n", failed ? 0 : count * threads,
                static_cast<long long>(ms));
    return failed ? 1 : 0;
}
