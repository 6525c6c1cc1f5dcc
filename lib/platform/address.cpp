#include <pipeworks/address.hpp>

#include <arpa/inet.h>
#include <net/if.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>
#include <cstring>

namespace pipeworks {
namespace {

static_assert(sizeof(sockaddr_in6) <= 28 && sizeof(sockaddr_in) <= 28);

Error bad(std::string_view text, const char* why) {
    return Error(errc::invalid_address, "address \"" + std::string(text) + "\": " + why);
}

Result<std::uint16_t> parse_port(std::string_view text, std::string_view port) {
    unsigned value = 0;
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (port.empty() || ec != std::errc{} || p != port.data() + port.size() || value > 65535)
        return bad(text, "port must be a number from 0 to 65535");
    return static_cast<std::uint16_t>(value);
}

}  // namespace

Address::Address() noexcept {
    std::memset(storage_, 0, sizeof storage_);
}

Result<Address> Address::ip(std::string_view host, std::uint16_t port) {
    Address a;
    std::string h(host);
    if (h.find(':') == std::string::npos) {
        sockaddr_in sin{};
        sin.sin_family = AF_INET;
        sin.sin_port = htons(port);
        if (inet_pton(AF_INET, h.c_str(), &sin.sin_addr) != 1)
            return bad(host, "not a numeric IPv4 or IPv6 address");
        std::memcpy(a.storage_, &sin, sizeof sin);
        return a;
    }
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(port);
    std::string ip = h;
    if (auto pct = h.find('%'); pct != std::string::npos) {
        ip = h.substr(0, pct);
        std::string scope = h.substr(pct + 1);
        if (scope.empty()) return bad(host, "empty IPv6 scope");
        unsigned id = 0;
        auto [p, ec] = std::from_chars(scope.data(), scope.data() + scope.size(), id);
        if (ec != std::errc{} || p != scope.data() + scope.size()) {
            id = if_nametoindex(scope.c_str());
            if (id == 0) return bad(host, "unknown network interface in IPv6 scope");
        }
        sin6.sin6_scope_id = id;
    }
    if (inet_pton(AF_INET6, ip.c_str(), &sin6.sin6_addr) != 1)
        return bad(host, "not a numeric IPv6 address");
    std::memcpy(a.storage_, &sin6, sizeof sin6);
    return a;
}

Result<std::pair<std::string, std::uint16_t>> split_host_port(std::string_view text) {
    std::string_view host, port;
    if (!text.empty() && text.front() == '[') {
        auto close = text.find(']');
        if (close == std::string_view::npos) return bad(text, "missing ']'");
        host = text.substr(1, close - 1);
        auto rest = text.substr(close + 1);
        if (rest.empty() || rest.front() != ':') return bad(text, "expected ':port' after ']'");
        port = rest.substr(1);
    } else {
        auto colon = text.rfind(':');
        if (colon == std::string_view::npos) return bad(text, "expected HOST:PORT");
        host = text.substr(0, colon);
        if (host.find(':') != std::string_view::npos)
            return bad(text, "IPv6 addresses need brackets: [addr]:port");
        port = text.substr(colon + 1);
    }
    if (host.empty()) return bad(text, "empty host");
    auto p = parse_port(text, port);
    if (!p) return p.error();
    return std::pair{std::string(host), *p};
}

Result<Address> Address::parse(std::string_view text, bool allow_no_port) {
    if (allow_no_port) {
        bool bracketed = !text.empty() && text.front() == '[';
        bool has_port = bracketed ? text.find("]:") != std::string_view::npos
                                  : std::count(text.begin(), text.end(), ':') == 1;
        if (!has_port) {
            if (bracketed) {
                if (text.back() != ']') return bad(text, "missing ']'");
                text = text.substr(1, text.size() - 2);
            }
            auto a = ip(text, 0);
            if (!a) return bad(text, "not a numeric IP address");
            return a;
        }
    }
    auto hp = split_host_port(text);
    if (!hp) return hp.error();
    auto a = ip(hp->first, hp->second);
    if (!a) return bad(text, "not a numeric IP address (names are resolved by connect)");
    if (a->is_v6() && text.front() != '[') return bad(text, "IPv6 addresses need brackets");
    return a;
}

Address Address::from_sockaddr(const ::sockaddr* sa) noexcept {
    Address a;
    if (sa == nullptr) return a;
    if (sa->sa_family == AF_INET) {
        std::memcpy(a.storage_, sa, sizeof(sockaddr_in));
    } else if (sa->sa_family == AF_INET6) {
        std::memcpy(a.storage_, sa, sizeof(sockaddr_in6));
    }
    return a;
}

Address Address::loopback(Family f, std::uint16_t port) noexcept {
    return *ip(f == Family::ipv6 ? "::1" : "127.0.0.1", port);
}

Address Address::any(Family f, std::uint16_t port) noexcept {
    return *ip(f == Family::ipv6 ? "::" : "0.0.0.0", port);
}

Family Address::family() const noexcept {
    switch (reinterpret_cast<const ::sockaddr*>(storage_)->sa_family) {
        case AF_INET:
            return Family::ipv4;
        case AF_INET6:
            return Family::ipv6;
        default:
            return Family::none;
    }
}

std::uint16_t Address::port() const noexcept {
    switch (family()) {
        case Family::ipv4:
            return ntohs(reinterpret_cast<const sockaddr_in*>(storage_)->sin_port);
        case Family::ipv6:
            return ntohs(reinterpret_cast<const sockaddr_in6*>(storage_)->sin6_port);
        default:
            return 0;
    }
}

std::uint32_t Address::scope_id() const noexcept {
    return is_v6() ? reinterpret_cast<const sockaddr_in6*>(storage_)->sin6_scope_id : 0;
}

Address Address::with_port(std::uint16_t port) const noexcept {
    Address a = *this;
    if (is_v4()) reinterpret_cast<sockaddr_in*>(a.storage_)->sin_port = htons(port);
    if (is_v6()) reinterpret_cast<sockaddr_in6*>(a.storage_)->sin6_port = htons(port);
    return a;
}

bool Address::is_loopback() const noexcept {
    if (is_v4()) {
        auto ip = ntohl(reinterpret_cast<const sockaddr_in*>(storage_)->sin_addr.s_addr);
        return (ip >> 24) == 127;
    }
    if (is_v6()) {
        const auto& a6 = reinterpret_cast<const sockaddr_in6*>(storage_)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(&a6)) return true;
        return IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127;
    }
    return false;
}

bool Address::is_any() const noexcept {
    if (is_v4()) return reinterpret_cast<const sockaddr_in*>(storage_)->sin_addr.s_addr == 0;
    if (is_v6())
        return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6*>(storage_)->sin6_addr);
    return false;
}

std::string Address::host() const {
    char buf[INET6_ADDRSTRLEN + 16] = {};
    if (is_v4()) {
        inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(storage_)->sin_addr, buf,
                  sizeof buf);
        return buf;
    }
    if (is_v6()) {
        inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(storage_)->sin6_addr, buf,
                  sizeof buf);
        std::string s = buf;
        if (scope_id() != 0) s += "%" + std::to_string(scope_id());
        return s;
    }
    return {};
}

std::string Address::to_string() const {
    if (is_v4()) return host() + ":" + std::to_string(port());
    if (is_v6()) return "[" + host() + "]:" + std::to_string(port());
    return {};
}

bool Address::same_host(const Address& o) const noexcept {
    if (family() != o.family()) return false;
    if (is_v4())
        return reinterpret_cast<const sockaddr_in*>(storage_)->sin_addr.s_addr ==
               reinterpret_cast<const sockaddr_in*>(o.storage_)->sin_addr.s_addr;
    if (is_v6())
        return std::memcmp(&reinterpret_cast<const sockaddr_in6*>(storage_)->sin6_addr,
                           &reinterpret_cast<const sockaddr_in6*>(o.storage_)->sin6_addr,
                           16) == 0 &&
               scope_id() == o.scope_id();
    return true;
}

bool Address::matches(const Address& o) const noexcept {
    return same_host(o) && (port() == 0 || port() == o.port());
}

const ::sockaddr* Address::sockaddr() const noexcept {
    return reinterpret_cast<const ::sockaddr*>(storage_);
}

unsigned Address::sockaddr_len() const noexcept {
    if (is_v4()) return sizeof(sockaddr_in);
    if (is_v6()) return sizeof(sockaddr_in6);
    return 0;
}

namespace {
// Family, address bytes, port (host order), scope: the fields that make an address's identity.
struct Key {
    int family;
    unsigned char ip[16];
    std::uint16_t port;
    std::uint32_t scope;
};
Key key_of(const Address& a) {
    Key k{};
    k.family = static_cast<int>(a.family());
    if (a.is_v4())
        std::memcpy(k.ip, &reinterpret_cast<const sockaddr_in*>(a.sockaddr())->sin_addr, 4);
    if (a.is_v6())
        std::memcpy(k.ip, &reinterpret_cast<const sockaddr_in6*>(a.sockaddr())->sin6_addr, 16);
    k.port = a.port();
    k.scope = a.scope_id();
    return k;
}
}  // namespace

std::strong_ordering Address::operator<=>(const Address& other) const noexcept {
    Key a = key_of(*this), b = key_of(other);
    if (auto c = a.family <=> b.family; c != 0) return c;
    if (int c = std::memcmp(a.ip, b.ip, 16); c != 0)
        return c < 0 ? std::strong_ordering::less : std::strong_ordering::greater;
    if (auto c = a.port <=> b.port; c != 0) return c;
    return a.scope <=> b.scope;
}

bool Address::operator==(const Address& other) const noexcept {
    return (*this <=> other) == std::strong_ordering::equal;
}

std::size_t Address::hash() const noexcept {
    Key k = key_of(*this);
    std::uint64_t h = 1469598103934665603ull;
    auto mix = [&h](const void* p, std::size_t n) {
        auto* b = static_cast<const unsigned char*>(p);
        for (std::size_t i = 0; i < n; ++i) h = (h ^ b[i]) * 1099511628211ull;
    };
    mix(&k.family, sizeof k.family);
    mix(k.ip, 16);
    mix(&k.port, sizeof k.port);
    mix(&k.scope, sizeof k.scope);
    return static_cast<std::size_t>(h);
}

Result<Address> resolve_blocking(std::string_view host_port, Family prefer) {
    auto hp = split_host_port(host_port);
    if (!hp) return hp.error();
    if (auto a = Address::ip(hp->first, hp->second)) return a;
    addrinfo hints{};
    hints.ai_family = prefer == Family::ipv4   ? AF_INET
                      : prefer == Family::ipv6 ? AF_INET6
                                               : AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int rc = getaddrinfo(hp->first.c_str(), nullptr, &hints, &res);
    if (rc != 0)
        return Error(errc::invalid_address,
                     "resolve \"" + std::string(host_port) + "\": " + gai_strerror(rc));
    Address out = Address::from_sockaddr(res->ai_addr).with_port(hp->second);
    freeaddrinfo(res);
    return out;
}

}  // namespace pipeworks
