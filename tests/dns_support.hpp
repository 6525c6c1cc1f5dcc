// A real DNS server for the suites: dnsmasq on 127.0.0.1 and an OS-chosen port, serving fixed
// records under pw.test, and a UDP socket that never answers.
#pragma once

#include "child_process.hpp"
#include "pipe_support.hpp"
#include "support.hpp"

#include <pipeworks/pipeworks.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace pw_test {

using pipeworks::Address;
using pipeworks::Family;

inline std::string find_dnsmasq() {
    if (const char* p = std::getenv("PIPEWORKS_DNSMASQ"); p && *p)
        return ::access(p, X_OK) == 0 ? p : "";
    std::vector<std::string> dirs{"/usr/sbin", "/sbin", "/usr/local/sbin"};
    if (const char* path = std::getenv("PATH")) {
        std::string all = path;
        for (std::size_t start = 0; start <= all.size();) {
            std::size_t end = all.find(':', start);
            if (end == std::string::npos) end = all.size();
            dirs.push_back(all.substr(start, end - start));
            start = end + 1;
        }
    }
    for (const auto& d : dirs) {
        std::string bin = d + "/dnsmasq";
        if (!d.empty() && ::access(bin.c_str(), X_OK) == 0) return bin;
    }
    return "";
}

// Binds `fd` to 127.0.0.1 and a port the OS chooses; the address it got.
inline pipeworks::Address bind_loopback(int fd) {
    REQUIRE(fd >= 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    socklen_t len = sizeof sa;
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) == 0);
    return Address::from_sockaddr(reinterpret_cast<sockaddr*>(&sa));
}

// A port the OS chose, free for UDP and TCP on 127.0.0.1 when this returns (dnsmasq serves
// both).
inline std::uint16_t free_port() {
    for (int attempt = 0; attempt < 20; ++attempt) {
        Fd udp(::socket(AF_INET, SOCK_DGRAM, 0));
        Fd tcp(::socket(AF_INET, SOCK_STREAM, 0));
        REQUIRE(tcp.fd >= 0);
        const Address at = bind_loopback(udp.fd);
        if (::bind(tcp.fd, at.sockaddr(), at.sockaddr_len()) == 0) return at.port();
    }
    FAIL("no port free for both UDP and TCP");
    return 0;
}

inline constexpr int kBigCount = 48;

// dnsmasq serving pw.test from fixed records on 127.0.0.1, killed and reaped with this object.
struct Dnsmasq {
    std::unique_ptr<Child> child;
    std::uint16_t port = 0;

    Dnsmasq() {
        const std::string bin = find_dnsmasq();
        REQUIRE_MESSAGE(!bin.empty(),
                        "dnsmasq not found (looked in PIPEWORKS_DNSMASQ, /usr/sbin, /sbin and "
                        "PATH): install dnsmasq-base, as .ci/install-deps does");
        for (int attempt = 0; attempt < 3 && !child; ++attempt) {
            port = free_port();
            std::vector<std::string> args{
                bin,
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--pid-file=",
                "--user=",
                "--log-facility=-",
                "--bind-interfaces",
                "--listen-address=127.0.0.1",
                "--port=" + std::to_string(port),
                "--local=/pw.test/",
                "--host-record=v4.pw.test,10.0.0.1",
                "--host-record=v6.pw.test,fd00::1",
                "--host-record=both.pw.test,10.0.0.2,fd00::2",
                "--host-record=many.pw.test,10.0.1.1",
                "--host-record=many.pw.test,10.0.1.2",
                "--host-record=many.pw.test,10.0.1.3",
                "--host-record=mixed.pw.test,10.0.2.1,fd00::2:1",
                "--host-record=mixed.pw.test,10.0.2.2,fd00::2:2",
                "--cname=alias.pw.test,both.pw.test",
                "--host-record=loop.pw.test,127.0.0.1,::1",
                "--host-record=lo4.pw.test,127.0.0.1",
                "--txt-record=txt.pw.test,nothing else",
            };
            // Too many addresses for a 512-byte UDP answer: truncated, asked again over TCP.
            for (int i = 1; i <= kBigCount; ++i)
                args.push_back("--host-record=big.pw.test,10.0.3." + std::to_string(i));
            auto c = std::make_unique<Child>(args);
            // It logs "started" once its sockets are bound; a taken port makes it exit.
            const bool up = c->wait_for(
                [&] { return c->err_text.find("started, version") != std::string::npos; });
            if (up && !c->status) {
                child = std::move(c);
            } else {
                c->poll();
                MESSAGE("dnsmasq did not start on port " << port << ": " << c->err_text);
            }
        }
        REQUIRE_MESSAGE(child, "dnsmasq did not start");
    }
    Address address() const { return Address::loopback(Family::ipv4, port); }
};

// A UDP socket on loopback that reads nothing and answers nothing.
struct SilentServer {
    Fd sock{::socket(AF_INET, SOCK_DGRAM, 0)};
    Address at = bind_loopback(sock.fd);
};

}  // namespace pw_test
