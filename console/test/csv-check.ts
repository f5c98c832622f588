// Bundled by esbuild for node (no type check: the browser code is checked by tsc).
// For tests/e2e/test_console_csv.py: reads a GetStatisticsResponse (binary protobuf) from the
// file named first and prints the CSV the statistics page downloads for it; with --g, prints
// fmtG of each number on standard input, one a line.
import { readFileSync } from "node:fs";
import { fromBinary } from "@bufbuild/protobuf";
import { GetStatisticsResponseSchema } from "../gen/clue/v1/stats_pb";
import { fmtG, unitsCsv } from "../src/csv";

const args = process.argv.slice(2);
if (args[0] === "--g") {
  const out = readFileSync(0, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => fmtG(Number(l)));
  process.stdout.write(out.join("\n") + "\n");
} else {
  process.stdout.write(unitsCsv(fromBinary(GetStatisticsResponseSchema, readFileSync(args[0]))));
}
