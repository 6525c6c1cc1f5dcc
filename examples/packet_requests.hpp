// The requests packet_client and packet_client_await make: their command line, the type, flags
// and payload of request i, and the check of its response (the handlers of packet_server).
#pragma once

#include <pipeworks/packet.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

struct PacketRequests {
    std::string target;
    std::uint64_t channel = 0, count = 100, size = 200, window = 32;

    // Types cycle: 0 echo, 1 flags = payload length, 2 fails, 3 echoes flags and payload,
    // 4 (no handler) fails.
    static std::uint64_t type(std::uint64_t i) { return i % 5; }
    static std::uint64_t flags(std::uint64_t i) { return type(i) == 3 ? i * 7 + 1 : 0; }
    // The payload of request i: a pattern derived from its number.
    std::string payload(std::uint64_t i) const {
        std::string p(size, '\0');
        for (std::uint64_t k = 0; k < size; ++k) p[k] = static_cast<char>('a' + (i + k) % 26);
        return p;
    }

    // Whether the response to request i is the one expected; a failure is recognised by its
    // ok flag and flags, whatever its reason text. An unexpected one is reported on stderr.
    bool check(std::uint64_t i, const pipeworks::PacketResult& r) const {
        bool good = false;
        switch (type(i)) {
            case 0:
                good = r.ok && r.flags == 0 && r.payload == payload(i);
                break;
            case 1:
                good = r.ok && r.flags == size && r.payload.empty();
                break;
            case 3:
                good = r.ok && r.flags == flags(i) && r.payload == payload(i);
                break;
            default:
                good = !r.ok && r.flags == 0;  // 2 and 4 fail
                break;
        }
        if (!good)
            std::fprintf(stderr, "request %llu (type %llu): unexpected %s, flags %llu\n",
                         static_cast<unsigned long long>(i),
                         static_cast<unsigned long long>(type(i)), r.ok ? "success" : "failure",
                         static_cast<unsigned long long>(r.flags));
        return good;
    }

    // Reads HOST:PORT [--channel C] [--count N] [--size BYTES] [--window W]. Returns -1 when
    // the program goes on, else its exit status (the usage printed: 2, or 0 for --help).
    int parse(const char* name, int argc, char** argv) {
        for (int i = 1; i < argc; ++i) {
            std::string a = argv[i];
            std::uint64_t* field = nullptr;
            if (a == "--channel")
                field = &channel;
            else if (a == "--count")
                field = &count;
            else if (a == "--size")
                field = &size;
            else if (a == "--window")
                field = &window;
            else if (a == "--help" || a == "-h")
                return usage(name, "submits requests to a packet server and checks the responses"),
                       0;
            else if (target.empty() && a[0] != '-')
                target = a;
            else
                return usage(name, ("unknown argument: " + a).c_str());
            if (field != nullptr && (i + 1 >= argc || !number(argv[++i], *field)))
                return usage(name, (a + ": expected a number").c_str());
        }
        if (target.empty()) return usage(name, "HOST:PORT missing");
        if (window == 0) return usage(name, "--window: must be at least 1");
        return -1;
    }

private:
    static int usage(const char* name, const char* why) {
        std::fprintf(stderr,
                     "%s: %s\n"
                     "usage: %s HOST:PORT [--channel C] [--count N] [--size BYTES] [--window W]\n",
                     name, why, name);
        return 2;
    }
    static bool number(const char* s, std::uint64_t& out) {
        char* end = nullptr;
        out = std::strtoull(s, &end, 10);
        return end != s && *end == '\0' && s[0] != '-';
    }
};
