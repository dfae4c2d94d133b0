# Plots of `make bench-scale`: reads the tab-separated data the scale and
# health_scale benches wrote to DIR and writes PNGs beside it.
#   gnuplot -e "dir='target/bench-scale'" benches/scale/plot.gp
if (!exists("dir")) dir = 'target/bench-scale'
set datafile separator "\t"
set terminal pngcairo size 800,500 font "sans,11" noenhanced
set key top left
set grid
set logscale x 10

set output dir.'/pick.png'
set title "Pick cost against pool size (one thread, median)"
set xlabel "backends in the pool (log)"
set ylabel "ns per pick (log)"
set logscale y 10
plot for [i=2:7] dir.'/pick.tsv' using 1:i with linespoints lw 2 pt 7 title columnhead(i)

set output dir.'/maglev.png'
set title "Maglev (source-hash): table size and build time"
set xlabel "backends in the pool (log)"
set ylabel "table size M, slots (log)"
set y2label "build time, ms (log)"
set logscale y2 10
set ytics nomirror
set y2tics
plot dir.'/maglev.tsv' using 1:2 axes x1y1 with linespoints lw 2 pt 7 title "table size M", \
     dir.'/maglev.tsv' using 1:5 axes x1y2 with linespoints lw 2 pt 5 title "build ms (right)"
unset y2label
unset y2tics
unset logscale y2
set ytics mirror

set output dir.'/snapshot.png'
set title "Snapshot of P pools × 10 backends (round-robin), median"
set xlabel "pools (log)"
set ylabel "ms (log)"
plot dir.'/snapshot.tsv' using ($2 == 10 && strcol(3) eq "round-robin" ? $1 : NaN):5 with linespoints lw 2 pt 7 title "parse + validate", \
     '' using ($2 == 10 && strcol(3) eq "round-robin" ? $1 : NaN):6 with linespoints lw 2 pt 5 title "Registry::build", \
     '' using ($2 == 10 && strcol(3) eq "round-robin" ? $1 : NaN):7 with linespoints lw 2 pt 9 title "Shared::publish", \
     '' using ($2 == 10 && strcol(3) eq "round-robin" ? $1 : NaN):8 with linespoints lw 2 pt 11 title "reload apply (identical)"

set output dir.'/health_cpu.png'
set title "Health thread CPU, TCP connect checks every 2 s"
set xlabel "backends checked (log)"
set ylabel "% of one core"
unset logscale y
set yrange [0:*]
plot dir.'/health.tsv' using 1:3 with linespoints lw 2 pt 7 title "health thread (median 2 s window)", \
     '' using 1:5 with linespoints lw 2 pt 5 title "whole process"

set output dir.'/health_spread.png'
set title "Check connections accepted per 100 ms bin (largest size, 10 s)"
set xlabel "ms from the start of the third check interval"
set ylabel "checks accepted"
unset logscale x
set xrange [-100:10000]
set yrange [0:*]
set style fill solid 0.6
set boxwidth 90
plot dir.'/health_bins.tsv' using ($1 + 50):2 with boxes title "checks per 100 ms bin"
