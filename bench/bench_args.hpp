// Command-line parsing shared by the load tools (loadgen, packet_loadgen, idle_conns), which use
// plain libuv only so that they measure the same way whatever state the library is in.
#pragma once

#include <uv.h>

#include <cstdlib>
#include <string>

namespace bench {

// "1.2.3.4:80" or "[::1]:80" (numeric hosts only) into *out. False when malformed.
inline bool parse_target(const std::string& spec, sockaddr_storage* out) {
    std::string host, port;
    if (!spec.empty() && spec[0] == '[') {
        size_t end = spec.find(']');
        if (end == std::string::npos || end + 1 >= spec.size() || spec[end + 1] != ':') {
            return false;
        }
        host = spec.substr(1, end - 1);
        port = spec.substr(end + 2);
    } else {
        size_t colon = spec.rfind(':');
        if (colon == std::string::npos) return false;
        host = spec.substr(0, colon);
        port = spec.substr(colon + 1);
    }
    char* end = nullptr;
    long p = std::strtol(port.c_str(), &end, 10);
    if (port.empty() || *end != '\0' || p <= 0 || p > 65535) return false;
    *out = {};
    if (uv_ip4_addr(host.c_str(), static_cast<int>(p), reinterpret_cast<sockaddr_in*>(out)) == 0) {
        return true;
    }
    return uv_ip6_addr(host.c_str(), static_cast<int>(p), reinterpret_cast<sockaddr_in6*>(out)) ==
           0;
}

// A number from lo to hi (strtod syntax) into *out. False otherwise.
inline bool parse_number(const char* s, double lo, double hi, double* out) {
    char* end = nullptr;
    double v = std::strtod(s, &end);
    if (end == s || *end != '\0' || !(v >= lo && v <= hi)) return false;
    *out = v;
    return true;
}

}  // namespace bench
