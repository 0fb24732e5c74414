"""The disentanglement board's statistical reading (docs/notes/disentanglement-board.md): for each
training correlation on the board, β-VAE + HFS against β-VAE on each metric: the difference of the
means over seeds, its standard error, Welch's two-sided p, and the smallest difference the test
would have found at 5% with 80% power (what a tie rules out). Read from the shipped entries, whose
numbers `harness leaderboard verify disentanglement` recomputes from their shipped predictions.

    .venv/bin/python docs/notes/disentanglement-board/reading.py
"""
from __future__ import annotations

from harness.leaderboards import board as boards
from harness.leaderboards.ties import LEVEL, Score, welch

WITH, WITHOUT = "beta_vae_hfs", "beta_vae"


def main() -> None:
    board = boards.load_board("disentanglement")
    entries = {(e["entrant"]["algorithm"], e["entrant"]["dataset.options.correlated"]): e
               for e in boards.load_entries(board)}
    print("| training | metric | β-VAE + HFS | β-VAE | difference ± s.e. | df | Welch p | reading "
          "| smallest detectable (80% power) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for correlated in sorted({c for _, c in entries}):
        if (WITH, correlated) not in entries or (WITHOUT, correlated) not in entries:
            continue
        scores = []
        for algorithm in (WITH, WITHOUT):
            result = entries[algorithm, correlated]["results"]["procedural_dsprites"]
            scores.append({m: Score(v["mean"], v["stderr"], len(result["seeds"])) for m, v in result["metrics"].items()})
        for metric in board.metrics:
            a, b = scores[0][metric], scores[1][metric]
            test = welch(a, b)
            reading = ("HFS higher" if test.difference > 0 else "HFS lower") if test.p < LEVEL else "tie"
            print(f"| {correlated or 'independent'} | {metric} | {a.mean:.4f} ± {a.stderr:.4f} | "
                  f"{b.mean:.4f} ± {b.stderr:.4f} | {test.difference:+.4f} ± {test.stderr:.4f} | {test.df:.1f} | "
                  f"{test.p:.3g} | {reading} | {test.detectable():.4f} |")


if __name__ == "__main__":
    main()
