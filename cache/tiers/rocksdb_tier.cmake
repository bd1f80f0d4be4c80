# The survival tier (L3) over RocksDB: its own library, so that RocksDB is
# linked only where it is used (server/ and the tier's tests and benchmarks).
# Included from cache/CMakeLists.txt.
find_package(RocksDB CONFIG REQUIRED)

add_library(fanout_rocksdb_tier STATIC ${CMAKE_CURRENT_LIST_DIR}/rocksdb_tier.cc)
target_include_directories(fanout_rocksdb_tier PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(fanout_rocksdb_tier
  PUBLIC fanout_cache fanout_common absl::btree absl::flat_hash_map absl::flat_hash_set
  PRIVATE RocksDB::rocksdb fanout_warnings)
