// The machine's network interfaces and routes, learned from the kernel without any network
// lookup (docs/routes.md). Plain values and free functions; safe to call from any thread.
#pragma once

#include <pipeworks/address.hpp>
#include <pipeworks/error.hpp>
#include <pipeworks/export.hpp>
#include <pipeworks/transport.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace pipeworks {

struct InterfaceAddress {
    Address address;          // port 0; IPv6 link-local addresses carry their scope
    unsigned prefix_len = 0;  // from the netmask: 24 for 255.255.255.0
};

struct Interface {
    std::string name;  // "lo", "eth0"
    unsigned index = 0;
    bool up = false;
    bool loopback = false;
    bool multicast = false;  // IFF_MULTICAST: the interface takes multicast
    std::vector<InterfaceAddress> addresses;
};

// Every interface with its IPv4 and IPv6 addresses (getifaddrs), in the kernel's order.
PIPEWORKS_API Result<std::vector<Interface>> list_interfaces();

// Where a pipe is opened from: a local address of one family, and the interface it is on. A
// pipe on a route binds to `local` (NetConf::bind_device = interface pins it to the device).
struct Route {
    std::string interface;
    Address local;  // port 0
};

// The route the kernel would use for `family`'s default destination: learned by connecting a
// UDP socket (which sends nothing) and asking which local address it got. Errors: no route of
// that family (errc::not_connected, "no default route for IPv6").
PIPEWORKS_API Result<Route> default_route(Family family);

// Every route of the machine: one per interface address (loopback included).
PIPEWORKS_API Result<std::vector<Route>> list_routes();

// A port free on `ip` now for `transport`: the OS picks it for a socket bound to port 0, which
// is closed again. Another program may take it before it is used; prefer binding port 0.
PIPEWORKS_API Result<std::uint16_t> free_port(const Address& ip,
                                              Transport transport = Transport::tcp);

}  // namespace pipeworks
