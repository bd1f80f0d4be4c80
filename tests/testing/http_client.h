// A blocking HTTP/1.1 client for tests of the admin endpoint (libcurl).
#ifndef FANOUT_TESTS_TESTING_HTTP_CLIENT_H_
#define FANOUT_TESTS_TESTING_HTTP_CLIENT_H_

#include <curl/curl.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"

namespace fanout::testing {

struct HttpResponse {
  long status = 0;
  std::string content_type;
  std::string body;
};

// Sends `method` (GET, HEAD, POST, ...) to `url` and waits for the whole
// answer, up to `timeout`. Unavailable when no answer came.
inline absl::StatusOr<HttpResponse> HttpRequest(const std::string& url,
                                                const std::string& method = "GET",
                                                absl::Duration timeout = absl::Seconds(30)) {
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
  HttpResponse response;
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(absl::ToInt64Milliseconds(timeout)));
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  if (method == "HEAD") {
    curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
  } else if (method != "GET") {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
  }
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &response.body);
  curl_easy_setopt(
      curl, CURLOPT_WRITEFUNCTION, +[](char* data, size_t size, size_t n, void* out) -> size_t {
        static_cast<std::string*>(out)->append(data, size * n);
        return size * n;
      });
  const CURLcode rc = curl_easy_perform(curl);
  if (rc != CURLE_OK) {
    curl_easy_cleanup(curl);
    return absl::UnavailableError(absl::StrCat(url, ": ", curl_easy_strerror(rc)));
  }
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response.status);
  const char* type = nullptr;
  curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &type);
  if (type != nullptr) response.content_type = type;
  curl_easy_cleanup(curl);
  return response;
}

}  // namespace fanout::testing

#endif  // FANOUT_TESTS_TESTING_HTTP_CLIENT_H_
