// Clients of the fanoutd pods a bench drives, one per address.
#ifndef FANOUT_BENCH_POD_CLIENTS_H_
#define FANOUT_BENCH_POD_CLIENTS_H_

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "client/client.h"

namespace fanout::bench {

// One client per address, in order; empty (the failure printed to stderr)
// when one cannot be made.
inline std::vector<std::unique_ptr<client::Client>> ConnectPods(
    const std::vector<std::string>& addrs) {
  std::vector<std::unique_ptr<client::Client>> pods;
  for (const std::string& a : addrs) {
    auto c = client::Client::Connect(a);
    if (!c.ok()) {
      std::fprintf(stderr, "%s: %s\n", a.c_str(), std::string(c.status().message()).c_str());
      return {};
    }
    pods.push_back(*std::move(c));
  }
  return pods;
}

}  // namespace fanout::bench

#endif  // FANOUT_BENCH_POD_CLIENTS_H_
