// Status propagation helpers for code that returns absl::Status/StatusOr.
#ifndef FANOUT_COMMON_STATUS_MACROS_H_
#define FANOUT_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define FANOUT_CONCAT_INNER_(a, b) a##b
#define FANOUT_CONCAT_(a, b) FANOUT_CONCAT_INNER_(a, b)

// Returns the status from the enclosing function if `expr` is not OK.
#define RETURN_IF_ERROR(expr)                          \
  do {                                                 \
    ::absl::Status fanout_status_ = (expr);            \
    if (!fanout_status_.ok()) return fanout_status_;   \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, F())` assigns the value of F() or returns its
// status from the enclosing function.
#define ASSIGN_OR_RETURN(lhs, expr) \
  FANOUT_ASSIGN_OR_RETURN_IMPL_(FANOUT_CONCAT_(fanout_statusor_, __LINE__), lhs, expr)

#define FANOUT_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) return std::move(tmp).status();      \
  lhs = *std::move(tmp)

#endif  // FANOUT_COMMON_STATUS_MACROS_H_
