// Interfaces, routes, free ports, binding to a route and a device, the connected check, and
// multicast. Multicast runs in a network namespace the test makes (a child process with its
// own loopback, multicast switched on there), so the machine's interfaces are never touched.
#include "pipe_support.hpp"

#include <pipeworks/pipeworks.hpp>

#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>

using namespace pipeworks;
using namespace pw_test;
using namespace std::chrono_literals;

TEST_CASE("routes: the interfaces list has loopback with 127.0.0.1 and ::1") {
    auto itfs = list_interfaces();
    REQUIRE(itfs);
    const Interface* lo_itf = nullptr;
    for (const auto& i : *itfs)
        if (i.loopback) lo_itf = &i;
    REQUIRE(lo_itf != nullptr);
    CHECK(lo_itf->up);
    CHECK(lo_itf->index > 0);
    bool v4 = false, v6 = false;
    for (const auto& a : lo_itf->addresses) {
        if (a.address == Address::loopback(Family::ipv4)) {
            v4 = true;
            CHECK(a.prefix_len == 8);
        }
        if (a.address == Address::loopback(Family::ipv6)) {
            v6 = true;
            CHECK(a.prefix_len == 128);
        }
    }
    CHECK(v4);
    CHECK(v6);
    auto routes = list_routes();
    REQUIRE(routes);
    bool lo_route = false;
    for (const auto& r : *routes)
        lo_route =
            lo_route || (r.interface == lo_itf->name && r.local == Address::loopback(Family::ipv4));
    CHECK(lo_route);
}

TEST_CASE("routes: the default route, when the machine has one, is one of its addresses") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        auto r = default_route(f);
        if (!r) {
            // A machine without a route of this family: the error says so.
            CHECK(r.error() == errc::not_connected);
            CHECK(r.error().message.find("no default route") != std::string::npos);
            continue;
        }
        CHECK(r->local.family() == f);
        CHECK(r->local.port() == 0);
        CHECK(!r->interface.empty());
    }
    CHECK(!default_route(Family::none));
}

TEST_CASE("routes: free_port gives a port a listener can take") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        for (Transport t : {Transport::tcp, Transport::udp}) {
            auto port = free_port(lo(f), t);
            REQUIRE(port);
            CHECK(*port > 0);
            Loop loop;
            const Address at = lo(f).with_port(*port);
            auto p = t == Transport::tcp ? Pipe::listen(loop, at) : Pipe::udp(loop, at);
            REQUIRE_MESSAGE(p, p.error().message);
            CHECK(p.value()->local_address() == at);
        }
    }
    CHECK(!free_port(Address{}));
}

TEST_CASE("routes: a pipe opened on a route binds there; a device binding is checked") {
    for (Family f : kFamilies) {
        CAPTURE(family_name(f));
        Loop loop;
        auto server = must(Pipe::listen(loop, lo(f)));
        const Route route{"lo", Address::loopback(f)};
        NetConf conf;
        conf.bind_device = route.interface;
        auto client = Pipe::connect(loop, server->local_address(), conf, route.local);
        if (!client) {
            // Without CAP_NET_RAW the device binding is refused, and the error says why.
            CAPTURE(client.error().message);
            CHECK(client.error().message.find("CAP_NET_RAW") != std::string::npos);
            MESSAGE("SKIP part: SO_BINDTODEVICE needs CAP_NET_RAW");
            conf.bind_device.clear();
            client = Pipe::connect(loop, server->local_address(), conf, route.local);
        }
        REQUIRE(client);
        run_until(
            loop, [&] { return client.value()->is_up(); }, "up on the route");
        CHECK(client.value()->local_address().same_host(route.local));
        CHECK(client.value()->socket_connected());
    }
    Loop loop;
    NetConf bad;
    bad.bind_device = "no-such-if0";
    auto r = Pipe::udp(loop, lo(Family::ipv4), {}, bad);
    REQUIRE(!r);
    CHECK(r.error().message.find("NetConf.bind_device \"no-such-if0\"") != std::string::npos);
    bad.bind_device = std::string(20, 'x');
    CHECK(bad.validate(Transport::udp) == errc::invalid_config);
}

TEST_CASE("routes: socket_connected turns false when the peer goes, before any read") {
    Loop loop;
    auto pair = tcp_pair(loop, Family::ipv4);
    CHECK(pair.client->socket_connected());
    CHECK(pair.accepted->socket_connected());
    pair.accepted->pause();  // nobody reads: the check alone must see it
    pair.client->close();
    run_until(
        loop, [&] { return !pair.accepted->socket_connected(); }, "the OS sees the FIN");
    CHECK(!pair.server->socket_connected());  // a server has no connection
}

namespace {

// In a child process in its own network namespace, with multicast on its loopback: a sender and
// a receiver joined to `group` (IPv4 on lo, IPv6 on a veth pair of the namespace). Returns "" when
// the datagram arrived, else what failed.
std::string multicast_in_namespace(Family f, const char* group_text, bool source_specific) {
    if (::unshare(CLONE_NEWNET) != 0) return std::string("SKIP unshare: ") + std::strerror(errno);
    int s = ::socket(AF_INET, SOCK_DGRAM, 0);
    ifreq ifr{};
    std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
    ifr.ifr_flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING | IFF_MULTICAST;
    const bool up = ::ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
    ::close(s);
    if (!up) return std::string("bring lo up: ") + std::strerror(errno);
    // Linux delivers no IPv6 multicast over loopback: IPv6 uses a veth pair of the namespace
    // (made with iproute2), whose multicast comes back to the sender's host (multicast loop).
    const char* itf = f == Family::ipv4 ? "lo" : "pw0";
    if (f == Family::ipv6 &&
        std::system("ip link add pw0 type veth peer name pw1 && ip link set pw0 up && "
                    "ip link set pw1 up && ip -6 addr add fd00::1/64 dev pw0 nodad") != 0)
        return "iproute2: making the veth pair pw0/pw1 failed";
    Loop loop;
    const Address group = Address::ip(group_text, 0).value();
    auto rx = Pipe::udp(loop, Address::any(f, 0));
    if (!rx) return "udp rx: " + rx.error().message;
    const std::uint16_t port = rx.value()->local_address().port();
    const Address source =
        f == Family::ipv4 ? Address::loopback(f) : Address::ip("fd00::1", 0).value();
    if (Error e = rx.value()->join_group(group, itf, source_specific ? source : Address{}))
        return "join: " + e.message;
    auto tx = Pipe::udp(loop, source);
    if (!tx) return "udp tx: " + tx.error().message;
    if (Error e = tx.value()->set_multicast_interface(itf)) return "interface: " + e.message;
    if (Error e = tx.value()->set_multicast_ttl(1)) return "ttl: " + e.message;
    if (Error e = tx.value()->set_multicast_loop(true)) return "loop: " + e.message;
    std::string got;
    rx.value()->on_message([&](Pipe&, const Message& m) { got = std::string(m.data); });
    // A link-local scope group (ff12::, ff32::) needs the interface in the destination.
    const Address to = f == Family::ipv4 ? group.with_port(port)
                                         : Address::parse("[" + std::string(group_text) + "%" +
                                                          itf + "]:" + std::to_string(port))
                                               .value();
    for (int i = 0; i < 20 && got.empty(); ++i) {
        if (Error e = tx.value()->send_to("to the group", to)) return "send: " + e.message;
        loop.run_until([&] { return !got.empty(); }, 50ms);
    }
    if (got != "to the group") return "nothing arrived for " + to.to_string();
    if (Error e = rx.value()->leave_group(group, itf, source_specific ? source : Address{}))
        return "leave: " + e.message;
    return "";
}

// Runs `fn` in a forked child; its message comes back through a pipe.
std::string in_child(const std::function<std::string()>& fn) {
    int fds[2];
    REQUIRE(::pipe(fds) == 0);
    const pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        ::close(fds[0]);
        const std::string r = fn();
        (void)!::write(fds[1], r.data(), r.size());
        ::_exit(r.empty() ? 0 : 1);
    }
    ::close(fds[1]);
    std::string out;
    char buf[512];
    for (;;) {
        pollfd p{fds[0], POLLIN, 0};
        if (::poll(&p, 1, 10'000) <= 0) {
            ::kill(pid, SIGKILL);
            out = "the child did not finish within 10 s";
            break;
        }
        const ssize_t n = ::read(fds[0], buf, sizeof buf);
        if (n <= 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fds[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (out.empty() && !(WIFEXITED(status) && WEXITSTATUS(status) == 0))
        out = "the child failed (status " + std::to_string(status) + ")";
    return out;
}

}  // namespace

TEST_CASE("multicast: join, send, receive, leave, v4 and v6, any-source and source-specific") {
    struct Case {
        Family f;
        const char* group;
        bool ssm;
    };
    for (const Case& c :
         {Case{Family::ipv4, "239.1.2.3", false}, Case{Family::ipv4, "232.1.2.3", true},
          Case{Family::ipv6, "ff12::1234", false}, Case{Family::ipv6, "ff32::8000:1", true}}) {
        CAPTURE(family_name(c.f));
        CAPTURE(std::string(c.group));
        const std::string r = in_child([&] { return multicast_in_namespace(c.f, c.group, c.ssm); });
        if (r.rfind("SKIP", 0) == 0) {
            MESSAGE(r << " (a network namespace needs root)");
            continue;
        }
        CHECK_MESSAGE(r.empty(), r);
    }
}

TEST_CASE("multicast: clear errors") {
    Loop loop;
    auto tcp = must(Pipe::listen(loop, lo(Family::ipv4)));
    CHECK(tcp->join_group(Address::ip("239.1.1.1", 0).value()) == errc::wrong_pipe_kind);
    auto u = must(Pipe::udp(loop, lo(Family::ipv4)));
    CHECK(u->join_group(Address{}) == errc::invalid_address);
    Error e = u->join_group(Address::ip("239.1.1.1", 0).value(), "no-such-if0");
    CHECK(e == errc::invalid_address);
    CHECK(e.message.find("no-such-if0") != std::string::npos);
    CHECK(u->set_multicast_ttl(0) == errc::invalid_config);
    CHECK(u->set_multicast_ttl(256) == errc::invalid_config);
    Error notgroup = u->join_group(Address::ip("10.0.0.1", 0).value());
    CHECK(notgroup);
    CHECK(notgroup.message.find("join_group 10.0.0.1") != std::string::npos);
}
