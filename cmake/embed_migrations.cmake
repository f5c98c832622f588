# cmake -DDIR=migrations -DOUT=migrations_embedded.c -P embed_migrations.cmake
# Writes a C file holding every DIR/*.sql (name and exact bytes) as db_embedded_migrations[],
# so `clued migrate` and `clued serve` need no source tree. The output is rewritten only
# when its content changes.
file(GLOB files "${DIR}/*.sql")
list(SORT files)
set(arrays "")
set(entries "")
set(i 0)
foreach(f ${files})
  get_filename_component(name "${f}" NAME)
  file(READ "${f}" hex HEX)
  string(LENGTH "${hex}" n)
  math(EXPR bytes "${n} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
  string(REGEX REPLACE "((0x[0-9a-f][0-9a-f],){16})" "\\1\n" body "${body}")
  string(APPEND arrays "static const char m${i}[] = {\n${body}0};\n")
  string(APPEND entries "    {\"${name}\", m${i}, ${bytes}},\n")
  math(EXPR i "${i} + 1")
endforeach()
file(WRITE "${OUT}.tmp" "/* The .sql files of ${DIR}, embedded by cmake/embed_migrations.cmake at build time. */\n"
  "#include \"db/migrate.h\"\n\n${arrays}\n"
  "const db_embedded_migration_t db_embedded_migrations[] = {\n${entries}    {NULL, NULL, 0},\n};\n"
  "const size_t db_embedded_nmigrations = ${i};\n")
execute_process(COMMAND ${CMAKE_COMMAND} -E copy_if_different "${OUT}.tmp" "${OUT}")
file(REMOVE "${OUT}.tmp")
