#include <pipeworks/address.hpp>

#include <doctest/doctest.h>

#include <unordered_set>

using namespace pipeworks;

TEST_CASE("parse and format IPv4") {
    auto a = Address::parse("1.2.3.4:80");
    REQUIRE(a);
    CHECK(a->is_v4());
    CHECK(a->port() == 80);
    CHECK(a->host() == "1.2.3.4");
    CHECK(a->to_string() == "1.2.3.4:80");
}

TEST_CASE("parse and format IPv6 with brackets and scope") {
    auto a = Address::parse("[::1]:80");
    REQUIRE(a);
    CHECK(a->is_v6());
    CHECK(a->is_loopback());
    CHECK(a->to_string() == "[::1]:80");
    auto s = Address::parse("[fe80::1%lo]:80");
    REQUIRE(s);
    CHECK(s->scope_id() != 0);
    CHECK(s->port() == 80);
    auto n = Address::parse("[fe80::1%" + std::to_string(s->scope_id()) + "]:80");
    REQUIRE(n);
    CHECK(*n == *s);
}

TEST_CASE("bad addresses are errors that name the input") {
    for (const char* bad :
         {"", "1.2.3.4", "1.2.3.4:", "1.2.3.4:65536", "1.2.3.4:x", "::1:80", "[::1:80", "[::1]80",
          "300.1.1.1:1", "[fe80::1%nosuchif0]:1", "host.example:80"}) {
        auto r = Address::parse(bad);
        CHECK_MESSAGE(!r, bad);
        if (!r) {
            CHECK(r.error() == errc::invalid_address);
            CHECK(r.error().message.find(bad) != std::string::npos);
        }
    }
}

TEST_CASE("comparison, hashing, loopback and any") {
    auto a = *Address::parse("127.0.0.1:1");
    auto b = *Address::parse("127.0.0.1:2");
    CHECK(a < b);
    CHECK(a != b);
    CHECK(a.same_host(b));
    CHECK(a.with_port(2) == b);
    std::unordered_set<Address> set{a, b, a};
    CHECK(set.size() == 2);
    CHECK(Address::loopback(Family::ipv4).is_loopback());
    CHECK(Address::loopback(Family::ipv6).is_loopback());
    CHECK(Address::any(Family::ipv4).is_any());
    CHECK(Address::any(Family::ipv6).is_any());
    CHECK_FALSE(a.is_any());
    CHECK(Address().empty());
    CHECK(Address().to_string().empty());
    CHECK(*Address::parse("127.0.0.1:0") != *Address::parse("[::1]:0"));
}

TEST_CASE("port 0 filter matches any port of the same host") {
    auto filter = *Address::parse("127.0.0.1:0");
    CHECK(filter.matches(*Address::parse("127.0.0.1:5000")));
    CHECK_FALSE(filter.matches(*Address::parse("127.0.0.2:5000")));
    auto exact = *Address::parse("127.0.0.1:5000");
    CHECK(exact.matches(*Address::parse("127.0.0.1:5000")));
    CHECK_FALSE(exact.matches(*Address::parse("127.0.0.1:5001")));
}

TEST_CASE("allow_no_port and resolve_blocking with /etc/hosts names") {
    auto a = Address::parse("10.0.0.1", true);
    REQUIRE(a);
    CHECK(a->port() == 0);
    auto b = Address::parse("[::1]", true);
    REQUIRE(b);
    CHECK(b->is_v6());
    auto r = resolve_blocking("localhost:8080");
    REQUIRE(r);
    CHECK(r->is_loopback());
    CHECK(r->port() == 8080);
}
