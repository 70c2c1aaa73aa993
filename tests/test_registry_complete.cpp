// Every op declared in include/xgrad/ops.hpp is in the registry, and nothing else is.
#define BOOST_TEST_MODULE registry_complete
#include <boost/test/unit_test.hpp>

#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include <xgrad/xgrad.hpp>

namespace {

std::set<std::string> declared_ops() {
  std::ifstream in(XGRAD_SOURCE_DIR "/include/xgrad/ops.hpp");
  BOOST_REQUIRE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  // "template <class T>\nVariable<T> name(" declares a public op.
  const std::regex declaration(R"(template <class T>\s*Variable<T> (\w+)\()");
  std::set<std::string> names;
  const std::string s = text.str();
  for (auto it = std::sregex_iterator(s.begin(), s.end(), declaration);
       it != std::sregex_iterator(); ++it)
    names.insert((*it)[1]);
  return names;
}

}  // namespace

BOOST_AUTO_TEST_CASE(every_declared_op_is_registered) {
  const std::set<std::string> declared = declared_ops();
  BOOST_TEST(declared.size() >= 20u);
  std::set<std::string> registered;
  for (const xgrad::OpInfo& op : xgrad::op_registry()) {
    BOOST_TEST(registered.insert(op.name).second, "registered twice: " << op.name);
  }
  for (const std::string& name : declared)
    BOOST_TEST(registered.count(name) == 1u, "op '" << name << "' is declared but not registered");
  for (const std::string& name : registered)
    BOOST_TEST(declared.count(name) == 1u, "registry entry '" << name << "' is not in ops.hpp");
}
