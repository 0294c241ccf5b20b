"""The dashboard's Streamlit side: sidebar, state and caches, controls, result views.

The only code that touches ``st.session_state``, ``st.cache_*`` and ``st.query_params``; pages
import from here and from ``llmopt``.
"""
