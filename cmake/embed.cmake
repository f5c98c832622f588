# cmake -DIN=file -DOUT=file.c -DSYMBOL=name -P embed.cmake
# Writes a C file defining `const unsigned char SYMBOL[]` with IN's bytes and
# `const size_t SYMBOL_len`, so the binary carries the file and needs no source tree.
file(READ "${IN}" hex HEX)
string(LENGTH "${hex}" n)
math(EXPR bytes "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n" body "${body}")
get_filename_component(name "${IN}" NAME)
file(WRITE "${OUT}.tmp" "/* ${name}, embedded by cmake/embed.cmake at build time. */\n#include <stddef.h>\n\n"
  "extern const unsigned char ${SYMBOL}[];\nextern const size_t ${SYMBOL}_len;\n"
  "const unsigned char ${SYMBOL}[] = {\n${body}0};\nconst size_t ${SYMBOL}_len = ${bytes};\n")
file(RENAME "${OUT}.tmp" "${OUT}")
