#include "router/bounded_text.h"

#include <string>

#include "gtest/gtest.h"

namespace fanout::router {
namespace {

constexpr char kEllipsis[] = "\xE2\x80\xA6";

TEST(BoundedTextTest, ShortValidTextIsUnchanged) {
  EXPECT_EQ(BoundedText("backend down", 64), "backend down");
  EXPECT_EQ(BoundedText("caf\xC3\xA9 \xF0\x9F\x9A\x80", 64), "caf\xC3\xA9 \xF0\x9F\x9A\x80");
  EXPECT_EQ(BoundedText("", 0), "");
  EXPECT_EQ(BoundedText("exactly", 7), "exactly");
}

TEST(BoundedTextTest, LongTextIsCutWithEllipsisWithinTheBound) {
  const std::string cut = BoundedText(std::string(8192, 'r'), 128);
  EXPECT_EQ(cut.size(), 128u);
  EXPECT_EQ(cut, std::string(125, 'r') + kEllipsis);
}

TEST(BoundedTextTest, CutsAtCharacterBoundaries) {
  // "é" is two bytes: 4 of them are 8 bytes; with a 6-byte bound only one
  // fits before the 3-byte ellipsis.
  EXPECT_EQ(BoundedText("\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9", 6),
            std::string("\xC3\xA9") + kEllipsis);
  EXPECT_EQ(BoundedText("\xF0\x9F\x9A\x80\xF0\x9F\x9A\x80", 7),
            std::string("\xF0\x9F\x9A\x80") + kEllipsis);
  EXPECT_EQ(BoundedText("\xF0\x9F\x9A\x80\xF0\x9F\x9A\x80", 6), kEllipsis);
}

TEST(BoundedTextTest, InvalidUtf8BecomesQuestionMarks) {
  EXPECT_EQ(BoundedText("ok \xFF\xFE end", 64), "ok ?? end");
  EXPECT_EQ(BoundedText("\xC3", 64), "?");                 // truncated sequence
  EXPECT_EQ(BoundedText("\xC0\xAF", 64), "??");            // overlong
  EXPECT_EQ(BoundedText("\xED\xA0\x80", 64), "???");       // surrogate
  EXPECT_EQ(BoundedText("\xF4\x90\x80\x80", 64), "????");  // above U+10FFFF
  EXPECT_EQ(BoundedText("a\x80"
                        "b",
                        64),
            "a?b");  // stray continuation
}

TEST(BoundedTextTest, TinyBoundsCutWithoutEllipsis) {
  EXPECT_EQ(BoundedText("abcdef", 2), "ab");
  EXPECT_EQ(BoundedText("abcdef", 0), "");
}

}  // namespace
}  // namespace fanout::router
