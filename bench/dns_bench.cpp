// Resolutions per second against a local dnsmasq, in one run: pipeworks' Resolver (c-ares on
// the loop) against uv_getaddrinfo on libuv's thread pool (the system resolver). Both ask for
// A and AAAA of a name that has both, and read /etc/hosts first. uv_getaddrinfo asks the
// servers of /etc/resolv.conf on port 53 only, so dnsmasq listens on 127.0.0.1:53 and the
// bench runs in a mount namespace whose /etc/resolv.conf names it (bench/README.md).
//
//   dns_bench [--dnsmasq PATH] [--port N] [--seconds N] [--inflight N,N,...]
#include <pipeworks/pipeworks.hpp>

#include <netdb.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <vector>

extern char** environ;

using namespace pipeworks;
using namespace std::chrono_literals;

namespace {

constexpr const char* kName = "bench.pw.test";
constexpr const char* kV4 = "10.0.0.1";

struct Args {
    std::string dnsmasq = "/usr/sbin/dnsmasq";
    std::uint16_t port = 53;
    int seconds = 3;
    std::vector<int> inflight{1, 16, 64};
};

[[noreturn]] void usage(const char* why) {
    std::fprintf(stderr,
                 "dns_bench: %s\nusage: dns_bench [--dnsmasq PATH] [--port N] [--seconds N] "
                 "[--inflight N,N,...]\n",
                 why);
    std::exit(2);
}

Args parse(int argc, char** argv) {
    Args a;
    for (int i = 1; i < argc; ++i) {
        std::string k = argv[i];
        if (i + 1 >= argc) usage(("missing value for " + k).c_str());
        std::string v = argv[++i];
        if (k == "--dnsmasq") {
            a.dnsmasq = v;
        } else if (k == "--port") {
            a.port = static_cast<std::uint16_t>(std::atoi(v.c_str()));
        } else if (k == "--seconds") {
            a.seconds = std::max(1, std::atoi(v.c_str()));
        } else if (k == "--inflight") {
            a.inflight.clear();
            for (std::size_t s = 0; s < v.size();) {
                std::size_t e = v.find(',', s);
                if (e == std::string::npos) e = v.size();
                a.inflight.push_back(std::max(1, std::atoi(v.substr(s, e - s).c_str())));
                s = e + 1;
            }
        } else {
            usage(("unknown option " + k).c_str());
        }
    }
    return a;
}

// dnsmasq with the bench's one name, killed and reaped on scope exit.
struct Dnsmasq {
    pid_t pid = -1;
    Dnsmasq(const std::string& bin, std::uint16_t port) {
        std::vector<std::string> args{
            bin,
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--user=",
            "--bind-interfaces",
            "--listen-address=127.0.0.1",
            "--port=" + std::to_string(port),
            "--local=/pw.test/",
            "--host-record=" + std::string(kName) + "," + kV4 + ",fd00::1"};
        std::vector<char*> argv;
        for (auto& s : args) argv.push_back(s.data());
        argv.push_back(nullptr);
        if (int rc = posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ)) {
            std::fprintf(stderr, "dns_bench: cannot run %s: %s\n", bin.c_str(), std::strerror(rc));
            std::exit(1);
        }
    }
    ~Dnsmasq() {
        ::kill(pid, SIGTERM);
        ::waitpid(pid, nullptr, 0);
    }
    Dnsmasq(const Dnsmasq&) = delete;
    Dnsmasq& operator=(const Dnsmasq&) = delete;
};

struct Counts {
    std::uint64_t ok = 0, failed = 0;
    bool stopping = false;
    int active = 0;
    std::string first_error;
};

// Keeps `inflight` resolutions going for `seconds`; completions per second.
double measure(Loop& loop, const char* who, int inflight, int seconds,
               const std::function<void(Counts&, std::function<void()>&)>& make_starter) {
    Counts c;
    std::function<void()> start;
    make_starter(c, start);
    for (int i = 0; i < inflight; ++i) start();
    const auto t0 = std::chrono::steady_clock::now();
    std::uint64_t at_stop = 0;
    double elapsed = 0;
    loop.call_later(std::chrono::seconds(seconds), [&] {
        c.stopping = true;
        at_stop = c.ok;
        elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    });
    loop.run_until([&] { return c.stopping && c.active == 0; }, std::chrono::seconds(seconds + 10));
    if (c.failed > 0)
        std::fprintf(stderr, "dns_bench: %s, %d in flight: %llu resolutions failed (%s)\n", who,
                     inflight, static_cast<unsigned long long>(c.failed),
                     c.first_error.empty() ? "no details" : c.first_error.c_str());
    return elapsed > 0 ? static_cast<double>(at_stop) / elapsed : 0;
}

void pipeworks_starter(Loop& loop, Counts& c, std::function<void()>& start) {
    auto& r = Resolver::of(loop);
    start = [&r, &c, &start] {
        ++c.active;
        r.resolve(kName, 80, FamilyPolicy::any_ipv4_first, 2000ms,
                  [&c, &start](Result<std::vector<Address>> res) {
                      --c.active;
                      if (res && res->size() == 2) {
                          ++c.ok;
                      } else {
                          ++c.failed;
                          if (c.first_error.empty())
                              c.first_error = res ? "not 2 addresses" : res.error().message;
                      }
                      if (!c.stopping) start();
                  });
    };
}

struct GaiReq {
    uv_getaddrinfo_t req;
    Counts* c;
    std::function<void()>* start;
};

void getaddrinfo_starter(Loop& loop, Counts& c, std::function<void()>& start) {
    start = [&loop, &c, &start] {
        ++c.active;
        auto* g = new GaiReq{{}, &c, &start};
        g->req.data = g;
        addrinfo hints{};
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        int rc = uv_getaddrinfo(
            loop.native(), &g->req,
            [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
                auto* g = static_cast<GaiReq*>(req->data);
                int n = 0;
                for (addrinfo* p = res; p; p = p->ai_next) ++n;
                uv_freeaddrinfo(res);
                --g->c->active;
                if (status == 0 && n == 2)
                    ++g->c->ok;
                else
                    ++g->c->failed;
                Counts* c = g->c;
                auto* again = g->start;
                delete g;
                if (!c->stopping) (*again)();
            },
            kName, nullptr, &hints);
        if (rc != 0) {
            --c.active;
            ++c.failed;
            delete g;
        }
    };
}

// Both resolvers must see the bench's dnsmasq before anything is measured.
bool check(Loop& loop) {
    bool pw_ok = false;
    for (int i = 0; i < 50 && !pw_ok; ++i) {
        std::optional<bool> got;
        Resolver::of(loop).resolve(kName, 80, FamilyPolicy::ipv4_only, 200ms,
                                   [&](Result<std::vector<Address>> r) {
                                       got = r && !r->empty() && (*r)[0].host() == kV4;
                                   });
        loop.run_until([&] { return got.has_value(); }, 1s);
        pw_ok = got.value_or(false);
        if (!pw_ok) ::usleep(100000);
    }
    if (!pw_ok) {
        std::fprintf(stderr, "dns_bench: the Resolver gets no answer from dnsmasq\n");
        return false;
    }
    addrinfo hints{};
    hints.ai_family = AF_INET;
    addrinfo* res = nullptr;
    if (getaddrinfo(kName, nullptr, &hints, &res) != 0 || res == nullptr) {
        std::fprintf(stderr,
                     "dns_bench: the system resolver does not reach dnsmasq on 127.0.0.1:53; run "
                     "in a mount namespace whose /etc/resolv.conf says \"nameserver 127.0.0.1\" "
                     "(bench/README.md)\n");
        return false;
    }
    freeaddrinfo(res);
    return true;
}

}  // namespace

int main(int argc, char** argv) {
    Args args = parse(argc, argv);
    Dnsmasq dns(args.dnsmasq, args.port);
    Loop loop;
    ResolverConf conf;
    conf.servers = {Address::loopback(Family::ipv4, args.port)};
    if (Error e = Resolver::configure(loop, conf)) {
        std::fprintf(stderr, "dns_bench: %s\n", e.message.c_str());
        return 1;
    }
    if (!check(loop)) return 1;
    const char* pool = std::getenv("UV_THREADPOOL_SIZE");
    std::printf("resolutions/s of %s (A + AAAA), %d s each, libuv thread pool %s\n", kName,
                args.seconds, pool ? pool : "4 (default)");
    std::printf("%-9s %14s %16s %7s\n", "inflight", "uv_getaddrinfo", "pipeworks", "ratio");
    for (int n : args.inflight) {
        double base =
            measure(loop, "uv_getaddrinfo", n, args.seconds,
                    [&](Counts& c, std::function<void()>& s) { getaddrinfo_starter(loop, c, s); });
        double pw =
            measure(loop, "pipeworks", n, args.seconds,
                    [&](Counts& c, std::function<void()>& s) { pipeworks_starter(loop, c, s); });
        std::printf("%-9d %14.0f %16.0f %7.2f\n", n, base, pw, base > 0 ? pw / base : 0);
        std::fflush(stdout);
    }
    return 0;
}
