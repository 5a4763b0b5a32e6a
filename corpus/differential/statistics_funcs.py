# name: statistics over latencies from the context
import re
import statistics as st
lat = [int(x) for x in re.findall(r"latency_ms=(\d+)", context)]
print(len(lat))
print(st.mean(lat), st.median(lat), st.median_low(lat), st.median_high(lat))
print(round(st.stdev(lat), 6), round(st.pstdev(lat), 6), round(st.variance(lat[:50]), 4))
print(st.quantiles(lat, n=4), st.quantiles(lat, n=10)[:3])
print(st.mode([1, 2, 2, 3, 3, 3]), st.multimode("aabbcd"))
print(st.fmean([1.5, 2.5, 3.0]), st.geometric_mean([1, 4, 16]), st.harmonic_mean([1, 2, 4]))
try:
    st.mean([])
except st.StatisticsError as exc:
    print("StatisticsError:", exc)
