// The one Catch2 main for every test executable. Catch2 v2 exits with the number of failed assertions, so a run with
// exactly 4 failures would read as "skipped" to ctest (SKIP_RETURN_CODE 4, support/skip.h): any failure exits 1.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

int main(int argc, char* argv[]) {
  const int failed = Catch::Session().run(argc, argv);
  return failed == 0 ? 0 : 1;
}
