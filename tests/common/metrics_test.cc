#include "common/metrics.h"

#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fanout {
namespace {

using ::testing::ElementsAre;
using ::testing::Pair;

const MetricFamilySample* Find(const std::vector<MetricFamilySample>& families,
                               const std::string& name) {
  for (const MetricFamilySample& f : families) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

TEST(HistogramTest, ObserveCountsEachDurationInTheFirstBucketThatHoldsIt) {
  Histogram h({absl::Milliseconds(1), absl::Milliseconds(10)});
  h.Observe(absl::Microseconds(500));
  h.Observe(absl::Milliseconds(1));  // a bound is inclusive ("le")
  h.Observe(absl::Milliseconds(5));
  h.Observe(absl::Seconds(1));
  const Histogram::Snapshot s = h.Read();
  EXPECT_THAT(s.counts, ElementsAre(2, 1, 1));
  EXPECT_EQ(s.count, 4);
  EXPECT_EQ(s.sum, absl::Microseconds(500) + absl::Milliseconds(6) + absl::Seconds(1));
  EXPECT_THAT(s.bounds, ElementsAre(absl::Milliseconds(1), absl::Milliseconds(10)));
}

TEST(HistogramTest, ObserveFromManyThreadsLosesNothing) {
  Histogram h(LatencyBuckets());
  Counter c;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        h.ObserveNanos(i * 1000);
        c.Increment();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(h.Read().count, 40000);
  EXPECT_EQ(c.value(), 40000);
}

TEST(MetricRegistryTest, GetReturnsTheSameSeriesForTheSameNameAndLabels) {
  MetricRegistry registry;
  Counter* a = registry.GetCounter("fanout_x_total", "x", {{"tier", "l2"}});
  Counter* b = registry.GetCounter("fanout_x_total", "x", {{"tier", "l2"}});
  Counter* c = registry.GetCounter("fanout_x_total", "x", {{"tier", "l3"}});
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  a->Increment(2);
  c->Increment();
  Gauge* g = registry.GetGauge("fanout_y", "y");
  g->Add(5);
  g->Add(-2);
  Histogram* h = registry.GetHistogram("fanout_z_seconds", "z", {}, {absl::Milliseconds(1)});
  EXPECT_EQ(h, registry.GetHistogram("fanout_z_seconds", "z", {}, {absl::Milliseconds(1)}));
  h->Observe(absl::Milliseconds(3));

  const std::vector<MetricFamilySample> read = registry.Read();
  ASSERT_EQ(read.size(), 3);
  const MetricFamilySample* x = Find(read, "fanout_x_total");
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(x->kind, MetricKind::kCounter);
  EXPECT_EQ(x->help, "x");
  ASSERT_EQ(x->samples.size(), 2);
  EXPECT_THAT(x->samples[0].labels, ElementsAre(Pair("tier", "l2")));
  EXPECT_EQ(x->samples[0].value, 2);
  EXPECT_EQ(x->samples[1].value, 1);
  EXPECT_EQ(Find(read, "fanout_y")->samples[0].value, 3);
  const MetricFamilySample* z = Find(read, "fanout_z_seconds");
  EXPECT_EQ(z->kind, MetricKind::kHistogram);
  EXPECT_THAT(z->samples[0].histogram.counts, ElementsAre(0, 1));
}

TEST(MetricRegistryTest, NameAskedForAsAnotherKindGetsASeriesThatIsNotExposed) {
  MetricRegistry registry;
  registry.GetCounter("fanout_x_total", "x")->Increment();
  Gauge* g = registry.GetGauge("fanout_x_total", "x");
  ASSERT_NE(g, nullptr);
  g->Set(7);
  EXPECT_EQ(g, registry.GetGauge("fanout_x_total", "x"));  // not one more per call
  Histogram* h1 = registry.GetHistogram("fanout_h_seconds", "h", {}, {absl::Seconds(1)});
  Histogram* h2 = registry.GetHistogram("fanout_h_seconds", "h", {}, {absl::Seconds(2)});
  ASSERT_NE(h2, nullptr);
  EXPECT_NE(h1, h2);
  h2->Observe(absl::Seconds(1));

  const std::vector<MetricFamilySample> read = registry.Read();
  ASSERT_EQ(read.size(), 2);
  const MetricFamilySample* x = Find(read, "fanout_x_total");
  EXPECT_EQ(x->kind, MetricKind::kCounter);
  ASSERT_EQ(x->samples.size(), 1);
  EXPECT_EQ(x->samples[0].value, 1);
  EXPECT_EQ(Find(read, "fanout_h_seconds")->samples[0].histogram.count, 0);
}

TEST(CounterVecTest, IncrementMakesEachSeriesOnFirstUse) {
  MetricRegistry registry;
  CounterVec codes(&registry, "fanout_calls_total", "calls", {{"rpc", "Get"}}, "code",
                   {"OK", "CANCELLED", "UNKNOWN"});
  EXPECT_TRUE(registry.Read().empty());
  codes.Increment(2);
  codes.Increment(2);
  codes.Increment(3);  // out of range: ignored
  const std::vector<MetricFamilySample> read = registry.Read();
  ASSERT_EQ(read.size(), 1);
  ASSERT_EQ(read[0].samples.size(), 1);
  EXPECT_THAT(read[0].samples[0].labels, ElementsAre(Pair("rpc", "Get"), Pair("code", "UNKNOWN")));
  EXPECT_EQ(read[0].samples[0].value, 2);
}

TEST(CounterVecTest, ThreadsRacingOnFirstUseShareOneSeries) {
  MetricRegistry registry;
  CounterVec codes(&registry, "fanout_calls_total", "calls", {}, "code", {"OK"});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) codes.Increment(0);
    });
  }
  for (std::thread& t : threads) t.join();
  const std::vector<MetricFamilySample> read = registry.Read();
  ASSERT_EQ(read[0].samples.size(), 1);
  EXPECT_EQ(read[0].samples[0].value, 4000);
}

TEST(DiscardMetricsTest, HandsOutWorkingSeries) {
  Metrics* m = DiscardMetrics();
  ASSERT_NE(m, nullptr);
  Counter* c = m->GetCounter("fanout_discard_test_total", "test");
  c->Increment();
  EXPECT_EQ(c, DiscardMetrics()->GetCounter("fanout_discard_test_total", "test"));
}

}  // namespace
}  // namespace fanout
