// Parse LogQL queries with Grafana's own grammar (@grafana/lezer-logql).
// stdin: a JSON array of query strings; stdout: a JSON array, per query null (it parses)
// or {"at": offset, "near": text} for the first error node in its syntax tree.
import { parser } from "@grafana/lezer-logql";

let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = JSON.parse(input).map((query) => {
  const tree = parser.parse(query);
  let error = null;
  tree.iterate({
    enter: (node) => {
      if (error === null && node.type.isError) {
        error = { at: node.from, near: query.slice(Math.max(0, node.from - 20), node.from + 20) };
      }
    },
  });
  return error;
});
process.stdout.write(JSON.stringify(out));
