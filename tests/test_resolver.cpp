// The Resolver against a real DNS server on loopback (dnsmasq with fixed records under
// pw.test), a UDP socket that never answers, and a small server of the test's own that answers
// A queries and drops AAAA ones: records, policies and ordering, timeouts, a lost family,
// cancel, /etc/hosts, numeric and malformed names, configure, a loop destroyed mid-query.
#include "child_process.hpp"
#include "dns_support.hpp"
#include "pipe_support.hpp"
#include "support.hpp"

#include <pipeworks/pipeworks.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace pipeworks;
using namespace pw_test;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

// A DNS server on the test's loop that answers every A query with 10.9.9.9 and drops every
// other query: an AAAA answer lost for good.
struct ALoneServer {
    uv_udp_t* udp = new uv_udp_t{};
    Address at;
    int a_queries = 0, dropped = 0;

    explicit ALoneServer(Loop& loop, Family f = Family::ipv4) {
        REQUIRE(uv_udp_init(loop.native(), udp) == 0);
        udp->data = this;
        Address any = Address::loopback(f, 0);
        REQUIRE(uv_udp_bind(udp, any.sockaddr(), 0) == 0);
        sockaddr_storage ss{};
        int len = sizeof ss;
        REQUIRE(uv_udp_getsockname(udp, reinterpret_cast<sockaddr*>(&ss), &len) == 0);
        at = Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss));
        uv_udp_recv_start(
            udp,
            [](uv_handle_t*, std::size_t, uv_buf_t* b) {
                static char buf[1500];
                *b = uv_buf_init(buf, sizeof buf);
            },
            [](uv_udp_t* h, ssize_t n, const uv_buf_t* b, const sockaddr* from, unsigned) {
                if (n <= 0 || from == nullptr) return;
                static_cast<ALoneServer*>(h->data)->answer(
                    h, std::string(b->base, static_cast<std::size_t>(n)), from);
            });
    }
    ~ALoneServer() {
        uv_close(reinterpret_cast<uv_handle_t*>(udp),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_udp_t*>(h); });
    }
    ALoneServer(const ALoneServer&) = delete;
    ALoneServer& operator=(const ALoneServer&) = delete;

    void answer(uv_udp_t* h, const std::string& q, const sockaddr* from) {
        std::size_t p = 12;
        while (p < q.size() && q[p] != 0) p += 1 + static_cast<unsigned char>(q[p]);
        if (p + 5 > q.size()) return;
        const std::size_t qend = p + 5;  // the root label, type, class
        const int qtype =
            (static_cast<unsigned char>(q[p + 1]) << 8) | static_cast<unsigned char>(q[p + 2]);
        if (qtype != 1) {
            ++dropped;
            return;
        }
        ++a_queries;
        std::string r = q.substr(0, 2);                           // id
        r += bytes({0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0});         // response, 1 question, 1 answer
        r += q.substr(12, qend - 12);                             // the question
        r += bytes({0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4});  // name -> question, A, IN, TTL
        r += bytes({10, 9, 9, 9});
        uv_buf_t b = uv_buf_init(r.data(), static_cast<unsigned>(r.size()));
        uv_udp_try_send(h, &b, 1, from);
    }
};

// Stops `loop` from another thread after `limit`, unless it is gone first: a bound for run(),
// which a timer of the loop's own would keep going.
struct Watchdog {
    Loop& loop;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::atomic<bool> fired{false};
    std::thread thread;
    Watchdog(Loop& l, std::chrono::milliseconds limit)
        : loop(l), thread([this, limit] {
              std::unique_lock lock(mu);
              if (!cv.wait_for(lock, limit, [this] { return done; })) {
                  fired = true;
                  loop.post([this] { loop.stop(); });
              }
          }) {}
    ~Watchdog() {
        {
            std::lock_guard lock(mu);
            done = true;
        }
        cv.notify_all();
        thread.join();
    }
};

// What one lookup's callbacks saw.
struct Calls {
    struct Call {
        Family family;
        Result<std::vector<Address>> result;
        Clock::duration after;
    };
    std::vector<Call> calls;
    bool inside_call = false;  // a callback ran while lookup() was still running
    bool in_lookup = false;
    Clock::time_point started = Clock::now();
};

Resolver::Id lookup(Loop& loop, Calls& c, std::string_view host, FamilyPolicy policy,
                    std::chrono::milliseconds timeout = 2000ms, std::uint16_t port = 80) {
    c.started = Clock::now();
    c.in_lookup = true;
    auto id = Resolver::of(loop).lookup(
        host, port, policy, timeout, [&c](Family f, Result<std::vector<Address>> r) {
            if (c.in_lookup) c.inside_call = true;
            c.calls.push_back({f, std::move(r), Clock::now() - c.started});
        });
    c.in_lookup = false;
    return id;
}

// One family's answer, waited for (with a deadline).
Result<std::vector<Address>> lookup_one(Loop& loop, std::string_view host, Family f,
                                        std::uint16_t port = 80) {
    Calls c;
    lookup(loop, c, host, f == Family::ipv4 ? FamilyPolicy::ipv4_only : FamilyPolicy::ipv6_only,
           2000ms, port);
    if (!run_until(
            loop, [&] { return !c.calls.empty(); }, "the lookup's callback"))
        return Error(errc::dns_timeout, "test deadline");
    CHECK(c.calls.size() == 1);
    CHECK(c.calls[0].family == f);
    CHECK_FALSE(c.inside_call);
    return std::move(c.calls[0].result);
}

struct Resolved {
    std::optional<Result<std::vector<Address>>> result;
    int calls = 0;
};

Result<std::vector<Address>> resolve(Loop& loop, std::string_view host, FamilyPolicy policy,
                                     std::chrono::milliseconds timeout = 2000ms) {
    Resolved r;
    Resolver::of(loop).resolve(host, 443, policy, timeout, [&r](Result<std::vector<Address>> res) {
        ++r.calls;
        r.result = std::move(res);
    });
    CHECK_FALSE(r.result.has_value());
    if (!run_until(
            loop, [&] { return r.result.has_value(); }, "resolve's callback"))
        return Error(errc::dns_timeout, "test deadline");
    run_for(loop, 10ms);
    CHECK(r.calls == 1);
    return std::move(*r.result);
}

std::vector<std::string> hosts(const std::vector<Address>& v) {
    std::vector<std::string> out;
    for (const auto& a : v) out.push_back(a.host());
    return out;
}

std::set<std::string> host_set(const std::vector<Address>& v) {
    auto h = hosts(v);
    return {h.begin(), h.end()};
}

void use(Loop& loop, std::vector<Address> servers, bool hosts_file = true) {
    ResolverConf conf;
    conf.servers = std::move(servers);
    conf.hosts_file = hosts_file;
    Error e = Resolver::configure(loop, conf);
    REQUIRE_MESSAGE(!e, e.message);
}

}  // namespace

TEST_CASE("records from a DNS server: A only, AAAA only, both, several, a CNAME, NXDOMAIN") {
    Dnsmasq dns;
    Loop loop;
    use(loop, {dns.address()});

    auto v4 = must(lookup_one(loop, "v4.pw.test", Family::ipv4, 8080), "v4.pw.test A");
    CHECK(hosts(v4) == std::vector<std::string>{"10.0.0.1"});
    CHECK(v4[0].port() == 8080);
    auto v4_aaaa = lookup_one(loop, "v4.pw.test", Family::ipv6);
    REQUIRE_FALSE(v4_aaaa.ok());
    CHECK(v4_aaaa.error() == errc::no_address);
    CHECK(v4_aaaa.error().message == "v4.pw.test has no IPv6 address");

    auto v6 = must(lookup_one(loop, "v6.pw.test", Family::ipv6), "v6.pw.test AAAA");
    CHECK(hosts(v6) == std::vector<std::string>{"fd00::1"});
    CHECK(v6[0].port() == 80);
    CHECK(lookup_one(loop, "v6.pw.test", Family::ipv4).error() == errc::no_address);

    CHECK(hosts(must(lookup_one(loop, "both.pw.test", Family::ipv4))) ==
          std::vector<std::string>{"10.0.0.2"});
    CHECK(hosts(must(lookup_one(loop, "both.pw.test", Family::ipv6))) ==
          std::vector<std::string>{"fd00::2"});

    auto many = must(lookup_one(loop, "many.pw.test", Family::ipv4));
    CHECK(many.size() == 3);
    CHECK(host_set(many) == std::set<std::string>{"10.0.1.1", "10.0.1.2", "10.0.1.3"});

    CHECK(hosts(must(lookup_one(loop, "alias.pw.test", Family::ipv4))) ==
          std::vector<std::string>{"10.0.0.2"});
    CHECK(hosts(must(lookup_one(loop, "alias.pw.test", Family::ipv6))) ==
          std::vector<std::string>{"fd00::2"});

    for (Family f : {Family::ipv4, Family::ipv6}) {
        auto nx = lookup_one(loop, "nope.pw.test", f);
        REQUIRE_FALSE(nx.ok());
        CHECK(nx.error() == errc::host_not_found);
        CHECK(nx.error().message == "no such host nope.pw.test");
        CHECK(nx.error().code.message() == "no such host");
    }

    // A name outside pw.test: dnsmasq has no upstream and refuses (c-ares, with no other
    // server to try, reports that none answered).
    auto refused = lookup_one(loop, "example.com", Family::ipv4);
    REQUIRE_FALSE(refused.ok());
    CHECK(refused.error() == errc::dns_failed);
    CAPTURE(refused.error().message);
    CHECK(mentions(refused.error(), "refused"));
    CHECK(mentions(refused.error(), "c-ares: "));
    CHECK(mentions(refused.error(), "example.com"));
}

TEST_CASE("lookup calls back once per family asked, never inside the call") {
    Dnsmasq dns;
    Loop loop;
    use(loop, {dns.address()});

    for (auto policy : {FamilyPolicy::any_ipv6_first, FamilyPolicy::any_ipv4_first}) {
        Calls c;
        auto id = lookup(loop, c, "both.pw.test", policy);
        CHECK(id != 0);
        CHECK(c.calls.empty());
        REQUIRE(run_until(
            loop, [&] { return c.calls.size() == 2; }, "both families"));
        run_for(loop, 20ms);
        CHECK(c.calls.size() == 2);
        CHECK_FALSE(c.inside_call);
        std::set<Family> seen;
        for (auto& call : c.calls) {
            seen.insert(call.family);
            auto v = must(std::move(call.result));
            REQUIRE(v.size() == 1);
            CHECK(v[0].family() == call.family);
        }
        CHECK(seen == std::set<Family>{Family::ipv4, Family::ipv6});
        CHECK_FALSE(Resolver::of(loop).cancel(id));  // completed
    }

    // One family only: one call; the family without an address says so.
    Calls c;
    lookup(loop, c, "v4.pw.test", FamilyPolicy::any_ipv4_first);
    REQUIRE(run_until(
        loop, [&] { return c.calls.size() == 2; }, "both families"));
    for (auto& call : c.calls) {
        if (call.family == Family::ipv4)
            CHECK(call.result.ok());
        else
            CHECK(call.result.error() == errc::no_address);
    }

    Calls only;
    lookup(loop, only, "both.pw.test", FamilyPolicy::ipv6_only);
    REQUIRE(run_until(
        loop, [&] { return !only.calls.empty(); }, "the IPv6 answer"));
    run_for(loop, 50ms);
    REQUIRE(only.calls.size() == 1);
    CHECK(only.calls[0].family == Family::ipv6);

    // Ids are never 0 and never repeat.
    Calls a, b;
    auto ia = lookup(loop, a, "v4.pw.test", FamilyPolicy::ipv4_only);
    auto ib = lookup(loop, b, "v4.pw.test", FamilyPolicy::ipv4_only);
    CHECK(ia != 0);
    CHECK(ib != 0);
    CHECK(ia != ib);
    run_until(
        loop, [&] { return !a.calls.empty() && !b.calls.empty(); }, "two lookups");
}

TEST_CASE("resolve orders the families by the policy, interleaved") {
    Dnsmasq dns;
    Loop loop;
    use(loop, {dns.address()});

    auto v6_first = must(resolve(loop, "mixed.pw.test", FamilyPolicy::any_ipv6_first));
    REQUIRE(v6_first.size() == 4);
    std::vector<Family> fams;
    for (auto& a : v6_first) {
        fams.push_back(a.family());
        CHECK(a.port() == 443);
    }
    CHECK(fams == std::vector<Family>{Family::ipv6, Family::ipv4, Family::ipv6, Family::ipv4});
    CHECK(host_set(v6_first) ==
          std::set<std::string>{"10.0.2.1", "10.0.2.2", "fd00::2:1", "fd00::2:2"});

    auto v4_first = must(resolve(loop, "mixed.pw.test", FamilyPolicy::any_ipv4_first));
    fams.clear();
    for (auto& a : v4_first) fams.push_back(a.family());
    CHECK(fams == std::vector<Family>{Family::ipv4, Family::ipv6, Family::ipv4, Family::ipv6});

    auto only4 = must(resolve(loop, "mixed.pw.test", FamilyPolicy::ipv4_only));
    CHECK(host_set(only4) == std::set<std::string>{"10.0.2.1", "10.0.2.2"});
    auto only6 = must(resolve(loop, "mixed.pw.test", FamilyPolicy::ipv6_only));
    CHECK(host_set(only6) == std::set<std::string>{"fd00::2:1", "fd00::2:2"});

    // Uneven families: the longer one's rest comes last.
    CHECK(hosts(must(resolve(loop, "both.pw.test", FamilyPolicy::any_ipv6_first))) ==
          std::vector<std::string>{"fd00::2", "10.0.0.2"});
    CHECK(hosts(must(resolve(loop, "many.pw.test", FamilyPolicy::any_ipv6_first))).size() == 3);

    // One family failing does not fail the whole.
    CHECK(hosts(must(resolve(loop, "v4.pw.test", FamilyPolicy::any_ipv6_first))) ==
          std::vector<std::string>{"10.0.0.1"});

    // Every family failed: the most telling error.
    auto nx = resolve(loop, "nope.pw.test", FamilyPolicy::any_ipv6_first);
    CHECK(nx.error() == errc::host_not_found);
    CHECK(nx.error().message == "no such host nope.pw.test");
    auto none = resolve(loop, "txt.pw.test", FamilyPolicy::any_ipv4_first);
    CHECK(none.error() == errc::no_address);
    CHECK(none.error().message == "txt.pw.test has no IPv4 or IPv6 address");
    CHECK(resolve(loop, "v6.pw.test", FamilyPolicy::ipv4_only).error() == errc::no_address);
}

TEST_CASE("a server that never answers: the lookup ends by its timeout, promptly") {
    SilentServer silent;
    Loop loop;
    use(loop, {silent.at});

    Calls c;
    lookup(loop, c, "slow.pw.test", FamilyPolicy::any_ipv6_first, 300ms);
    REQUIRE(run_until(
        loop, [&] { return c.calls.size() == 2; }, "both timeouts"));
    for (auto& call : c.calls) {
        REQUIRE_FALSE(call.result.ok());
        CHECK(call.result.error() == errc::dns_timeout);
        CHECK(mentions(call.result.error(), "slow.pw.test"));
        CHECK(mentions(call.result.error(), "300 ms"));
        CHECK_FALSE(mentions(call.result.error(), "NetConf"));
        CHECK(call.after >= 300ms);
        CHECK(call.after < 1000ms);
    }

    auto r = resolve(loop, "slow.pw.test", FamilyPolicy::any_ipv4_first, 200ms);
    CHECK(r.error() == errc::dns_timeout);
    CHECK(mentions(r.error(), "200 ms"));

    // A timeout of zero is refused.
    Calls zero;
    lookup(loop, zero, "slow.pw.test", FamilyPolicy::ipv4_only, 0ms);
    REQUIRE(run_until(
        loop, [&] { return !zero.calls.empty(); }, "the refusal"));
    CHECK(zero.calls[0].result.error() == errc::invalid_config);
    CHECK_FALSE(zero.inside_call);
}

TEST_CASE("a family whose answer is lost does not delay the other family") {
    Loop loop;
    ALoneServer server(loop);
    use(loop, {server.at});

    Calls c;
    lookup(loop, c, "lost.pw.test", FamilyPolicy::any_ipv6_first, 1500ms);
    REQUIRE(run_until(
        loop, [&] { return !c.calls.empty(); }, "the A answer"));
    REQUIRE(c.calls.size() == 1);
    CHECK(c.calls[0].family == Family::ipv4);
    CHECK(hosts(must(std::move(c.calls[0].result))) == std::vector<std::string>{"10.9.9.9"});
    CHECK(c.calls[0].after < 500ms);  // not held back by the AAAA query sent before it
    CHECK(server.dropped >= 1);       // the AAAA query did arrive, and was dropped

    REQUIRE(run_until(
        loop, [&] { return c.calls.size() == 2; }, "the AAAA timeout"));
    CHECK(c.calls[1].family == Family::ipv6);
    CHECK(c.calls[1].result.error() == errc::dns_timeout);
    CHECK(c.calls[1].after >= 1500ms);

    // resolve() waits for both families up to its timeout, then gives what it has.
    auto start = Clock::now();
    auto r = must(resolve(loop, "lost.pw.test", FamilyPolicy::any_ipv6_first, 400ms));
    CHECK(hosts(r) == std::vector<std::string>{"10.9.9.9"});
    CHECK(Clock::now() - start >= 400ms);
}

TEST_CASE("run() goes on while a lookup waits, and not for a request nobody waits for") {
    Dnsmasq dns;
    SilentServer silent;
    Loop loop;
    use(loop, {dns.address()});

    Calls answered;
    lookup(loop, answered, "both.pw.test", FamilyPolicy::any_ipv6_first);
    {
        Watchdog bound(loop, 3000ms);
        loop.run();
        CHECK_FALSE(bound.fired);
    }
    CHECK(answered.calls.size() == 2);

    use(loop, {silent.at});
    Calls timed_out;
    lookup(loop, timed_out, "slow.pw.test", FamilyPolicy::any_ipv6_first, 300ms);
    const auto start = Clock::now();
    {
        Watchdog bound(loop, 3000ms);
        loop.run();  // c-ares would retry for seconds; nobody waits after 300 ms
        CHECK_FALSE(bound.fired);
    }
    CHECK(timed_out.calls.size() == 2);
    CHECK(Clock::now() - start < 1500ms);
}

TEST_CASE("a truncated answer is asked again over TCP") {
    Dnsmasq dns;
    Loop loop;
    use(loop, {dns.address()});
    auto big = must(lookup_one(loop, "big.pw.test", Family::ipv4), "big.pw.test");
    CHECK(big.size() == static_cast<std::size_t>(kBigCount));
    CHECK(host_set(big).count("10.0.3.1") == 1);
    CHECK(host_set(big).count("10.0.3." + std::to_string(kBigCount)) == 1);
}

TEST_CASE("a DNS server on IPv6") {
    Loop loop;
    ALoneServer server(loop, Family::ipv6);
    use(loop, {server.at});
    CHECK(hosts(must(lookup_one(loop, "v6server.pw.test", Family::ipv4))) ==
          std::vector<std::string>{"10.9.9.9"});
    CHECK(server.a_queries == 1);
}

TEST_CASE("cancel: no callback after it") {
    SilentServer silent;
    Loop loop;
    use(loop, {silent.at});
    auto& res = Resolver::of(loop);

    Calls c;
    auto id = lookup(loop, c, "slow.pw.test", FamilyPolicy::any_ipv4_first, 200ms);
    CHECK(res.cancel(id));
    CHECK_FALSE(res.cancel(id));
    run_for(loop, 400ms);  // past the timeout
    CHECK(c.calls.empty());

    bool resolved = false;
    auto rid = res.resolve("slow.pw.test", 1, FamilyPolicy::any_ipv4_first, 200ms,
                           [&](Result<std::vector<Address>>) { resolved = true; });
    run_for(loop, 50ms);
    CHECK(res.cancel(rid));
    run_for(loop, 300ms);
    CHECK_FALSE(resolved);

    // Cancelled before a result that is already in (a numeric host) is delivered.
    Calls numeric;
    auto nid = lookup(loop, numeric, "127.0.0.1", FamilyPolicy::ipv4_only);
    CHECK(res.cancel(nid));
    run_for(loop, 20ms);
    CHECK(numeric.calls.empty());

    CHECK_FALSE(res.cancel(0));
    CHECK_FALSE(res.cancel(987654321));
}

TEST_CASE("cancel inside the first family's callback stops the second") {
    Loop loop;
    ALoneServer server(loop);
    use(loop, {server.at});
    auto& res = Resolver::of(loop);

    int calls = 0;
    bool cancelled = false;
    Resolver::Id id = 0;
    id = res.lookup("lost.pw.test", 1, FamilyPolicy::any_ipv6_first, 300ms,
                    [&](Family, Result<std::vector<Address>>) {
                        ++calls;
                        cancelled = res.cancel(id);
                    });
    REQUIRE(run_until(
        loop, [&] { return calls == 1; }, "the A answer"));
    CHECK(cancelled);
    run_for(loop, 500ms);
    CHECK(calls == 1);
}

TEST_CASE("/etc/hosts answers before DNS, and only when hosts_file is on") {
    SilentServer silent;
    Loop loop;
    use(loop, {silent.at});

    // localhost is in every /etc/hosts with 127.0.0.1; the server would never answer.
    auto start = Clock::now();
    auto lo = must(lookup_one(loop, "localhost", Family::ipv4, 9), "localhost");
    CHECK(host_set(lo).count("127.0.0.1") == 1);
    CHECK(lo[0].port() == 9);
    CHECK(Clock::now() - start < 500ms);

    Dnsmasq dns;
    use(loop, {dns.address()}, false);
    auto refused = lookup_one(loop, "localhost", Family::ipv4);
    REQUIRE_FALSE(refused.ok());  // dnsmasq refuses names outside pw.test
    CHECK(refused.error() == errc::dns_failed);
}

TEST_CASE("numeric hosts answer without a query, for their own family") {
    SilentServer silent;
    Loop loop;
    use(loop, {silent.at});

    Calls c;
    lookup(loop, c, "127.0.0.1", FamilyPolicy::any_ipv6_first, 2000ms, 7);
    CHECK(c.calls.empty());
    REQUIRE(run_until(
        loop, [&] { return !c.calls.empty(); }, "the numeric answer"));
    run_for(loop, 20ms);
    REQUIRE(c.calls.size() == 1);
    CHECK_FALSE(c.inside_call);
    CHECK(c.calls[0].family == Family::ipv4);
    CHECK(must(std::move(c.calls[0].result)) ==
          std::vector<Address>{Address::loopback(Family::ipv4, 7)});
    CHECK(c.calls[0].after < 500ms);

    CHECK(must(resolve(loop, "::1", FamilyPolicy::any_ipv4_first, 200ms)) ==
          std::vector<Address>{Address::loopback(Family::ipv6, 443)});
    CHECK(hosts(must(resolve(loop, "fe80::1%1", FamilyPolicy::ipv6_only, 200ms))) ==
          std::vector<std::string>{"fe80::1%1"});

    auto excluded = lookup_one(loop, "::1", Family::ipv4);
    REQUIRE_FALSE(excluded.ok());
    CHECK(excluded.error() == errc::no_address);
    CHECK(mentions(excluded.error(), "::1"));
}

TEST_CASE("malformed names fail with dns_failed and say what is wrong") {
    SilentServer silent;
    Loop loop;
    use(loop, {silent.at});

    struct Case {
        std::string name;
        std::string says;
    };
    const std::vector<Case> cases{
        {"", "empty name"},
        {".", "empty name"},
        {std::string(64, 'a') + ".pw.test", "more than 63"},
        {std::string(200, 'a').insert(100, ".").insert(50, ".") + "." + std::string(60, 'b'),
         "more than 253"},
        {"a..pw.test", "empty label"},
        {".pw.test", "empty label"},
        {std::string("a\0b.pw.test", 11), "NUL"},
    };
    for (const auto& k : cases) {
        CAPTURE(k.name);
        Calls c;
        lookup(loop, c, k.name, FamilyPolicy::any_ipv4_first, 2000ms);
        REQUIRE(run_until(
            loop, [&] { return c.calls.size() == 2; }, "the refusals"));
        CHECK_FALSE(c.inside_call);
        for (auto& call : c.calls) {
            REQUIRE_FALSE(call.result.ok());
            CHECK(call.result.error() == errc::dns_failed);
            CHECK(mentions(call.result.error(), "malformed name"));
            CHECK(mentions(call.result.error(), k.says));
            CHECK(call.after < 500ms);
        }
    }
    // A 63-byte label and a trailing dot are fine (the server just does not answer).
    Calls ok;
    lookup(loop, ok, std::string(63, 'a') + ".pw.test.", FamilyPolicy::ipv4_only, 100ms);
    REQUIRE(run_until(
        loop, [&] { return !ok.calls.empty(); }, "the timeout"));
    CHECK(ok.calls[0].result.error() == errc::dns_timeout);
}

TEST_CASE("configure: bad servers refused; queries in flight finish on the old channel") {
    Dnsmasq dns;
    SilentServer silent;
    Loop loop;

    ResolverConf bad;
    bad.servers = {Address{}};
    Error e = Resolver::configure(loop, bad);
    CHECK(e == errc::invalid_address);
    CHECK(mentions(e, "server 0"));

    use(loop, {dns.address()});
    Calls inflight;
    lookup(loop, inflight, "v4.pw.test", FamilyPolicy::ipv4_only, 1000ms);
    use(loop, {silent.at});  // before the answer came in
    REQUIRE(run_until(
        loop, [&] { return !inflight.calls.empty(); }, "the in-flight answer"));
    CHECK(hosts(must(std::move(inflight.calls[0].result))) == std::vector<std::string>{"10.0.0.1"});

    Calls after;
    lookup(loop, after, "v4.pw.test", FamilyPolicy::ipv4_only, 200ms);
    REQUIRE(run_until(
        loop, [&] { return !after.calls.empty(); }, "the new server's silence"));
    CHECK(after.calls[0].result.error() == errc::dns_timeout);

    // A server with port 0 means port 53: refused or silent there, never this test's dnsmasq.
    ResolverConf p53;
    p53.servers = {Address::loopback(Family::ipv4, 0)};
    CHECK_FALSE(Resolver::configure(loop, p53));
}

TEST_CASE("the loop destroyed with queries in flight: no callback runs") {
    SilentServer silent;
    bool called = false;
    {
        Loop loop;
        use(loop, {silent.at});
        auto& res = Resolver::of(loop);
        auto cb = [&called](Family, Result<std::vector<Address>>) { called = true; };
        res.lookup("slow.pw.test", 1, FamilyPolicy::any_ipv6_first, 5000ms, cb);
        res.resolve("slow2.pw.test", 1, FamilyPolicy::ipv4_only, 5000ms,
                    [&called](Result<std::vector<Address>>) { called = true; });
        run_for(loop, 50ms);                                              // the queries are out
        res.lookup("127.0.0.1", 1, FamilyPolicy::ipv4_only, 5000ms, cb);  // answer held
        res.lookup("localhost", 1, FamilyPolicy::ipv4_only, 5000ms, cb);  // from /etc/hosts
        // A replaced channel still waited for.
        use(loop, {silent.at});
        res.lookup("slow3.pw.test", 1, FamilyPolicy::ipv4_only, 5000ms, cb);
    }
    CHECK_FALSE(called);
}

TEST_CASE("a callback that throws reaches run_until, and the resolver goes on") {
    SilentServer silent;
    Loop loop;
    use(loop, {silent.at});
    Resolver::of(loop).lookup("127.0.0.1", 1, FamilyPolicy::ipv4_only, 200ms,
                              [](Family, Result<std::vector<Address>>) {
                                  throw std::runtime_error("from the callback");
                              });
    CHECK_THROWS_WITH(loop.run_until([] { return false; }, 500ms), "from the callback");
    auto again = must(lookup_one(loop, "::1", Family::ipv6));
    CHECK(again.size() == 1);
}

TEST_CASE("the resolver's errors: appended to errc, with messages and rows in the guide") {
    // Appended after tls_truncated (23): the numbers of the older values stay.
    CHECK(static_cast<int>(errc::tls_truncated) == 23);
    CHECK(static_cast<int>(errc::host_not_found) == 24);
    CHECK(static_cast<int>(errc::no_address) == 25);
    CHECK(static_cast<int>(errc::dns_failed) == 26);
    std::ifstream guide(std::string(PIPEWORKS_SOURCE_DIR) + "/docs/guide.md");
    REQUIRE(guide.good());
    const std::string text((std::istreambuf_iterator<char>(guide)),
                           std::istreambuf_iterator<char>());
    for (errc e : {errc::dns_timeout, errc::host_not_found, errc::no_address, errc::dns_failed}) {
        const std::string msg = make_error_code(e).message();
        CAPTURE(msg);
        CHECK(msg != "unknown pipeworks error");
    }
    for (const char* row :
         {"| `dns_timeout`", "| `host_not_found`", "| `no_address`", "| `dns_failed`"}) {
        CAPTURE(row);
        CHECK(text.find(row) != std::string::npos);
    }
}

// ------------------------------------------------------------------ connect by name

TEST_CASE("connect by name: the resolver's addresses, IPv6 first, a refused one gives way") {
    Dnsmasq dns;
    Loop loop;
    use(loop, {dns.address()});
    // Only 127.0.0.1 listens: [::1] of the same port refuses, and the IPv4 address wins.
    auto server = must(Pipe::listen(loop, Address::loopback(Family::ipv4)), "listen");
    server->on_message([](Pipe& p, const Message& m) { CHECK(!p.send(m.data)); });
    const std::uint16_t port = server->local_address().port();
    auto p = must(Pipe::connect(loop, "loop.pw.test:" + std::to_string(port)), "connect");
    std::string got;
    p->on_message([&](Pipe&, const Message& m) { got += m.data; });
    REQUIRE(!p->send("by name"));
    run_until(
        loop, [&] { return got == "by name" || p->ended(); }, "echo by name");
    CHECK(got == "by name");
    CHECK(p->peer_address() == Address::loopback(Family::ipv4, port));

    // IPv4 only: straight to 127.0.0.1.
    NetConf v4;
    v4.family_policy = FamilyPolicy::ipv4_only;
    auto q = must(Pipe::connect(loop, "loop.pw.test:" + std::to_string(port), v4), "connect v4");
    run_until(
        loop, [&] { return q->is_up() || q->ended(); }, "up");
    CHECK(q->peer_address() == Address::loopback(Family::ipv4, port));

    // A name that does not exist.
    auto none = must(Pipe::connect(loop, "nothing.pw.test:" + std::to_string(port)), "connect");
    std::optional<EndInfo> end;
    none->on_end([&](Pipe&, const EndInfo& e) { end = e; });
    run_until(
        loop, [&] { return end.has_value(); }, "no such host");
    CAPTURE(end->error.message);
    CHECK(end->reason == EndReason::error);
    CHECK(end->error == errc::host_not_found);
}

TEST_CASE("connect by name: a silent IPv6 address, and IPv4 wins after 250 ms") {
    Dnsmasq dns;
    Loop loop;
    use(loop, {dns.address()});
    // A full listener on [::1]:P drops SYNs; 127.0.0.1:P answers.
    PipePtr good;
    BlackholeListener hole;
    for (int attempt = 0; attempt < 20 && !good; ++attempt) {
        hole = blackhole_listener(Family::ipv6);
        auto r = Pipe::listen(loop, Address::loopback(Family::ipv4, hole.address.port()));
        if (r) good = r.value();
    }
    REQUIRE(good);
    REQUIRE(hole.full);
    const auto t0 = std::chrono::steady_clock::now();
    auto p =
        must(Pipe::connect(loop, "loop.pw.test:" + std::to_string(hole.address.port())), "connect");
    std::chrono::steady_clock::time_point up_at;
    p->on_up([&](Pipe&) { up_at = std::chrono::steady_clock::now(); });
    run_until(
        loop, [&] { return up_at != std::chrono::steady_clock::time_point{} || p->ended(); },
        "up through IPv4");
    if (p->ended()) FAIL_CHECK(p->end_info()->error.message);
    REQUIRE(!p->ended());
    CHECK(p->peer_address().is_v4());
    const auto waited = up_at - t0;
    CHECK(waited >= 240ms);
    CHECK(waited < 800ms);
}

// ------------------------------------------------------------------ UDP destinations by name

namespace {

// UDP echoes on 127.0.0.1 and [::1] with one port number, so one name serves both families;
// each reply says which family answered.
struct UdpEchoPair {
    PipePtr v4, v6;
    std::uint16_t port = 0;
};

UdpEchoPair udp_echo_pair(Loop& loop) {
    UdpEchoPair e;
    for (int attempt = 0; attempt < 20 && !e.v4; ++attempt) {
        if (e.v6) e.v6->close();
        e.v6 = must(Pipe::udp(loop, Address::loopback(Family::ipv6)), "udp echo v6");
        e.port = e.v6->local_address().port();
        auto r = Pipe::udp(loop, Address::loopback(Family::ipv4, e.port));
        if (r) e.v4 = *r;
    }
    REQUIRE(e.v4);
    for (const PipePtr& p : {e.v4, e.v6})
        p->on_message([](Pipe& s, const Message& m) {
            CHECK(!s.send_to(std::string(m.data) + (m.from.is_v4() ? " v4" : " v6"), m.from));
        });
    return e;
}

struct UdpReplies {
    std::vector<std::string> got;
    bool up = false;
    std::optional<EndInfo> end;
};

std::shared_ptr<UdpReplies> watch_udp(Pipe& p) {
    auto r = std::make_shared<UdpReplies>();
    p.on_message([r](Pipe&, const Message& m) { r->got.emplace_back(m.data); });
    p.on_up([r](Pipe&) { r->up = true; });
    p.on_end([r](Pipe&, const EndInfo& e) { r->end = e; });
    return r;
}

}  // namespace

TEST_CASE("udp by name: datagrams sent while it resolves go out once it has; the policy picks") {
    Dnsmasq dns;
    Loop loop;
    use(loop, {dns.address()});
    auto echo = udp_echo_pair(loop);
    const std::string name = "loop.pw.test:" + std::to_string(echo.port);

    // The default policy: IPv6 first.
    auto p = must(Pipe::udp(loop, name), "udp by name");
    auto r = watch_udp(*p);
    CHECK_FALSE(p->is_up());
    CHECK(p->native_handle() == -1);
    CHECK(p->peer_address().empty());
    REQUIRE(!p->send("early"));
    REQUIRE(!p->send("second"));
    CHECK(p->write_queue_bytes() == 11);
    run_until(
        loop, [&] { return r->got.size() == 2 || r->end; }, "both held datagrams echoed");
    CHECK(r->up);
    CHECK(r->got == std::vector<std::string>{"early v6", "second v6"});
    CHECK(p->peer_address() == Address::loopback(Family::ipv6, echo.port));
    CHECK(p->stats().msgs_out == 2);
    CHECK(p->write_queue_bytes() == 0);
    REQUIRE(!p->send("later"));
    run_until(
        loop, [&] { return r->got.size() == 3; }, "a datagram once up");
    CHECK(r->got.back() == "later v6");

    SUBCASE("ipv4_only") {
        NetConf v4;
        v4.family_policy = FamilyPolicy::ipv4_only;
        auto q = must(Pipe::udp(loop, name, v4), "udp v4");
        auto rq = watch_udp(*q);
        REQUIRE(!q->send("x"));
        run_until(
            loop, [&] { return !rq->got.empty() || rq->end; }, "v4 echo");
        CHECK(rq->got == std::vector<std::string>{"x v4"});
        CHECK(q->peer_address() == Address::loopback(Family::ipv4, echo.port));
    }
    SUBCASE("a local address narrows the family to its own, and is bound") {
        auto q = must(Pipe::udp(loop, name, {}, Address::loopback(Family::ipv4)), "udp local v4");
        auto rq = watch_udp(*q);
        REQUIRE(!q->send("y"));
        run_until(
            loop, [&] { return !rq->got.empty() || rq->end; }, "v4 echo");
        CHECK(rq->got == std::vector<std::string>{"y v4"});
        CHECK(q->local_address().host() == "127.0.0.1");
        CHECK(q->local_address().port() != 0);
    }
    SUBCASE("send_to another address while resolving, and a framer") {
        NetConf framed;
        framed.framer = Framer::message();
        // The echo answers raw: its reply is not a frame, so only the length prefix is checked.
        std::string seen;
        echo.v6->on_message([&](Pipe&, const Message& m) { seen = m.data; });
        auto q = must(Pipe::udp(loop, name, framed), "udp framed");
        REQUIRE(!q->send("f"));
        run_until(
            loop, [&] { return seen.size() >= 5; }, "a framed datagram");
        CHECK(seen.substr(0, 5) == std::string("\0\0\0\1f", 5));
    }
}

TEST_CASE("udp by name: a hosts-file name never waits for DNS") {
    SilentServer silent;
    Loop loop;
    use(loop, {silent.at});
    auto echo = udp_echo_pair(loop);
    // localhost has an IPv4 line only (as on Debian and in containers): no AAAA question goes out.
    NetConf conf;
    conf.dns_timeout = 3000ms;
    const auto t0 = Clock::now();
    auto p = must(Pipe::udp(loop, "localhost:" + std::to_string(echo.port), conf), "localhost");
    auto r = watch_udp(*p);
    REQUIRE(!p->send("hosts"));
    run_until(
        loop, [&] { return !r->got.empty() || r->end; }, "echo via localhost");
    CHECK(r->got == std::vector<std::string>{"hosts v4"});
    CHECK(Clock::now() - t0 < 1500ms);
}

TEST_CASE("udp by name: errors as for connect; held datagrams reported unsent; close") {
    Dnsmasq dns;
    Loop loop;
    use(loop, {dns.address()});
    auto echo = udp_echo_pair(loop);

    SUBCASE("no such host") {
        auto p = must(Pipe::udp(loop, "nothing.pw.test:9"), "udp");
        auto r = watch_udp(*p);
        REQUIRE(!p->send("lost"));
        run_until(
            loop, [&] { return r->end.has_value(); }, "the end");
        CAPTURE(r->end->error.message);
        CHECK(r->end->reason == EndReason::error);
        CHECK(r->end->error == errc::host_not_found);
        CHECK(mentions(r->end->error, "nothing.pw.test"));
        CHECK(r->end->unsent_bytes == 4);
        CHECK_FALSE(r->up);
    }
    SUBCASE("a DNS server that never answers: dns_timeout") {
        SilentServer silent;
        use(loop, {silent.at});
        NetConf conf;
        conf.dns_timeout = 200ms;
        auto p = must(Pipe::udp(loop, "loop.pw.test:9", conf), "udp");
        auto r = watch_udp(*p);
        run_until(
            loop, [&] { return r->end.has_value(); }, "the timeout");
        CAPTURE(r->end->error.message);
        CHECK(r->end->reason == EndReason::timeout);
        CHECK(r->end->error == errc::dns_timeout);
        CHECK(mentions(r->end->error, "NetConf.dns_timeout"));
    }
    SUBCASE("close while resolving: no up, the held bytes counted") {
        auto p = must(Pipe::udp(loop, "loop.pw.test:" + std::to_string(echo.port)), "udp");
        auto r = watch_udp(*p);
        REQUIRE(!p->send("abc"));
        p->close();
        run_until(
            loop, [&] { return r->end.has_value(); }, "the end");
        run_for(loop, 100ms);
        CHECK(r->end->reason == EndReason::local_close);
        CHECK(r->end->unsent_bytes == 3);
        CHECK_FALSE(r->up);
        CHECK(r->got.empty());
    }
    SUBCASE("held datagrams are bounded by max_write_queue") {
        NetConf conf;
        conf.max_write_queue = 1000;
        conf.high_watermark = 1000;
        conf.low_watermark = 100;
        auto p = must(Pipe::udp(loop, "loop.pw.test:" + std::to_string(echo.port), conf), "udp");
        auto r = watch_udp(*p);
        REQUIRE(!p->send(std::string(600, 'a')));
        Error e = p->send(std::string(600, 'b'));
        CAPTURE(e.message);
        CHECK(e == errc::write_queue_full);
        run_until(
            loop, [&] { return r->end.has_value(); }, "the end");
        CHECK(r->end->error == errc::write_queue_full);
        CHECK(r->end->unsent_bytes == 600);
    }
    SUBCASE("multicast calls wait for the socket") {
        auto p = must(Pipe::udp(loop, "loop.pw.test:" + std::to_string(echo.port)), "udp");
        Error e = p->set_multicast_ttl(2);
        CAPTURE(e.message);
        CHECK(e == errc::not_connected);
        // A send_to() while it resolves is still checked.
        CHECK(p->send_to("x", Address::loopback(Family::ipv4, 0)) == errc::invalid_address);
        CHECK(p->send_to(std::string(70000, 'x'), Address::loopback(Family::ipv4, 9)) ==
              errc::message_too_large);
        run_until(
            loop, [&] { return p->is_up(); }, "up");
        CHECK(!p->set_multicast_ttl(2));
    }
    SUBCASE("bad input is refused at once") {
        auto zero = Pipe::udp(loop, "loop.pw.test:0");
        REQUIRE(!zero);
        CHECK(zero.error() == errc::invalid_address);
        CHECK(mentions(zero.error(), "port 0"));
        auto no_port = Pipe::udp(loop, "loop.pw.test");
        REQUIRE(!no_port);
        CHECK(mentions(no_port.error(), "udp"));
        NetConf v6;
        v6.family_policy = FamilyPolicy::ipv6_only;
        auto mismatch = Pipe::udp(loop, "loop.pw.test:9", v6, Address::loopback(Family::ipv4));
        REQUIRE(!mismatch);
        CHECK(mismatch.error() == errc::invalid_config);
        CHECK(mentions(mismatch.error(), "NetConf.family_policy"));
        // A numeric host is not resolved: the pipe is up at once.
        auto numeric = must(Pipe::udp(loop, "127.0.0.1:" + std::to_string(echo.port)), "numeric");
        CHECK(numeric->peer_address() == Address::loopback(Family::ipv4, echo.port));
        CHECK(numeric->native_handle() >= 0);
    }
}
