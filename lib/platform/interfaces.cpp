// Interfaces and routes from the kernel (getifaddrs, a connected UDP socket's local address);
// nothing here sends a packet.
#include <pipeworks/interfaces.hpp>

#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bit>
#include <cerrno>
#include <cstring>

namespace pipeworks {

namespace {

Error os_failure(const std::string& what, int err) {
    return Error(std::error_code(err, std::generic_category()), what + ": " + std::strerror(err));
}

unsigned prefix_of(const sockaddr* mask) {
    if (mask == nullptr) return 0;
    unsigned bits = 0;
    if (mask->sa_family == AF_INET) {
        bits = static_cast<unsigned>(
            std::popcount(reinterpret_cast<const sockaddr_in*>(mask)->sin_addr.s_addr));
    } else if (mask->sa_family == AF_INET6) {
        for (unsigned char b : reinterpret_cast<const sockaddr_in6*>(mask)->sin6_addr.s6_addr)
            bits += static_cast<unsigned>(std::popcount(b));
    }
    return bits;
}

struct Fd {
    int fd;
    ~Fd() {
        if (fd >= 0) ::close(fd);
    }
};

}  // namespace

Result<std::vector<Interface>> list_interfaces() {
    ifaddrs* list = nullptr;
    if (::getifaddrs(&list) != 0) return os_failure("getifaddrs", errno);
    std::vector<Interface> out;
    for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
        Interface* itf = nullptr;
        for (auto& o : out)
            if (o.name == i->ifa_name) itf = &o;
        if (itf == nullptr) {
            Interface n;
            n.name = i->ifa_name;
            n.index = ::if_nametoindex(i->ifa_name);
            n.up = (i->ifa_flags & IFF_UP) != 0;
            n.loopback = (i->ifa_flags & IFF_LOOPBACK) != 0;
            n.multicast = (i->ifa_flags & IFF_MULTICAST) != 0;
            out.push_back(std::move(n));
            itf = &out.back();
        }
        if (i->ifa_addr == nullptr ||
            (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
            continue;
        itf->addresses.push_back({Address::from_sockaddr(i->ifa_addr), prefix_of(i->ifa_netmask)});
    }
    ::freeifaddrs(list);
    return out;
}

Result<Route> default_route(Family family) {
    if (family != Family::ipv4 && family != Family::ipv6)
        return Error(errc::invalid_address, "default_route: the family must be IPv4 or IPv6");
    // Documentation addresses (RFC 5737, RFC 3849): a UDP connect picks the route to them and
    // sends nothing.
    const Address probe = family == Family::ipv4 ? Address::ip("192.0.2.1", 9).value()
                                                 : Address::ip("2001:db8::1", 9).value();
    const char* name = family == Family::ipv4 ? "IPv4" : "IPv6";
    Fd s{::socket(family == Family::ipv4 ? AF_INET : AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0)};
    if (s.fd < 0) return os_failure(std::string("default_route: socket (") + name + ")", errno);
    if (::connect(s.fd, probe.sockaddr(), probe.sockaddr_len()) != 0)
        return Error(errc::not_connected, std::string("no default route for ") + name + " (" +
                                              std::strerror(errno) + ")");
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(s.fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
        return os_failure("default_route: getsockname", errno);
    Route r;
    r.local = Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss)).with_port(0);
    auto itfs = list_interfaces();
    if (!itfs) return itfs.error();
    for (const auto& i : *itfs)
        for (const auto& a : i.addresses)
            if (a.address.same_host(r.local)) r.interface = i.name;
    return r;
}

Result<std::vector<Route>> list_routes() {
    auto itfs = list_interfaces();
    if (!itfs) return itfs.error();
    std::vector<Route> out;
    for (const auto& i : *itfs)
        for (const auto& a : i.addresses) out.push_back(Route{i.name, a.address});
    return out;
}

Result<std::uint16_t> free_port(const Address& ip, Transport transport) {
    if (ip.empty()) return Error(errc::invalid_address, "free_port: an IP address is required");
    Fd s{::socket(ip.is_v4() ? AF_INET : AF_INET6,
                  (transport == Transport::tcp ? SOCK_STREAM : SOCK_DGRAM) | SOCK_CLOEXEC, 0)};
    if (s.fd < 0) return os_failure("free_port: socket", errno);
    const Address any_port = ip.with_port(0);
    if (::bind(s.fd, any_port.sockaddr(), any_port.sockaddr_len()) != 0)
        return os_failure("free_port: bind " + any_port.to_string(), errno);
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    if (::getsockname(s.fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0)
        return os_failure("free_port: getsockname", errno);
    return Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss)).port();
}

}  // namespace pipeworks
