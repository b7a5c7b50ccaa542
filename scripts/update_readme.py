"""Copy the generated results tables into README.md between their markers
(`<!-- results:NAME -->` ... `<!-- /results:NAME -->` holds results/NAME.md), so the README's
figures are the files the runs wrote, never typed by hand.

    python scripts/update_readme.py
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from util import atomic_write_text  # noqa: E402


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")

    def fill(match: re.Match) -> str:
        name = match.group(1)
        table = ROOT / "results" / f"{name}.md"
        body = table.read_text(encoding="utf-8").strip() if table.exists() else "(not run yet)"
        # demote the file's own headings below the README's section heading
        body = re.sub(r"^# ", "#### ", body, flags=re.M)
        return f"<!-- results:{name} -->\n{body}\n<!-- /results:{name} -->"

    new = re.sub(r"<!-- results:([\w-]+) -->.*?<!-- /results:\1 -->", fill, text, flags=re.S)
    if new != text:
        atomic_write_text(readme, new)
        print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
