"""DSpark Lab dashboards: a Streamlit multipage app over run directories (read only) and live sim ablations.

    pip install -e '.[dash]'
    streamlit run dashboards/app.py            # runs root: sidebar, default ./runs or $DSPARK_LAB_RUNS

data.py holds the cached loaders (they call lab and sim; no metric is computed here), ui.py the shared
sidebar and charts, pages/ one file per page.
"""
