// Address: an IPv4 or IPv6 socket address (IP, port, IPv6 scope id), a small value type.
// Thread-safe as a value (no shared state).
#pragma once

#include <pipeworks/error.hpp>
#include <pipeworks/export.hpp>

#include <compare>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

struct sockaddr;

namespace pipeworks {

enum class Family : std::uint8_t { none = 0, ipv4 = 4, ipv6 = 6 };

class PIPEWORKS_API Address {
public:
    // An empty address (family none); matches nothing, formats as "".
    Address() noexcept;

    // Parses "1.2.3.4:80", "[::1]:80", "[fe80::1%lo]:80" (scope by name or number).
    // A missing port is an error unless allow_no_port, in which case it is 0.
    static Result<Address> parse(std::string_view text, bool allow_no_port = false);
    // A numeric IP ("127.0.0.1", "::1", "fe80::1%lo") with a port; never resolves names.
    static Result<Address> ip(std::string_view host, std::uint16_t port);
    // From a sockaddr_in / sockaddr_in6; an empty address for any other family.
    static Address from_sockaddr(const ::sockaddr* sa) noexcept;

    static Address loopback(Family f, std::uint16_t port = 0) noexcept;  // 127.0.0.1 / ::1
    static Address any(Family f, std::uint16_t port = 0) noexcept;       // 0.0.0.0 / ::

    Family family() const noexcept;
    bool is_v4() const noexcept { return family() == Family::ipv4; }
    bool is_v6() const noexcept { return family() == Family::ipv6; }
    bool empty() const noexcept { return family() == Family::none; }
    std::uint16_t port() const noexcept;
    std::uint32_t scope_id() const noexcept;  // 0 for IPv4 and unscoped IPv6
    Address with_port(std::uint16_t port) const noexcept;

    bool is_loopback() const noexcept;  // 127.0.0.0/8, `::1`, and 127.0.0.0/8 mapped into IPv6
    bool is_any() const noexcept;       // 0.0.0.0 or `::`

    // The IP alone ("1.2.3.4", "::1", "fe80::1%2"); the scope is printed as a number.
    std::string host() const;
    // "1.2.3.4:80" or "[::1]:80"; "" for an empty address.
    std::string to_string() const;

    // Same IP (and scope); ports may differ.
    bool same_host(const Address& other) const noexcept;
    // True when `other` is this address, or this has port 0 and the hosts match
    // (the subscription filter rule: port 0 means any port).
    bool matches(const Address& other) const noexcept;

    const ::sockaddr* sockaddr() const noexcept;
    unsigned sockaddr_len() const noexcept;

    std::strong_ordering operator<=>(const Address& other) const noexcept;
    bool operator==(const Address& other) const noexcept;

    std::size_t hash() const noexcept;

private:
    // Room for sockaddr_in6 (28 bytes) without pulling system headers into the API.
    alignas(8) unsigned char storage_[28];
};

// Resolves "host:port" ("[v6]:port" too) with the system resolver, blocking the calling
// thread. Pipe::connect(Loop&, std::string_view) resolves without blocking the loop.
PIPEWORKS_API Result<Address> resolve_blocking(std::string_view host_port,
                                               Family prefer = Family::none);

// Splits "host:port" / "[v6]:port" into host and port (no resolution).
PIPEWORKS_API Result<std::pair<std::string, std::uint16_t>> split_host_port(std::string_view text);

}  // namespace pipeworks

template <>
struct std::hash<pipeworks::Address> {
    std::size_t operator()(const pipeworks::Address& a) const noexcept { return a.hash(); }
};
